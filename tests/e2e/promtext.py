"""Reading Prometheus pages and PromQL in tests: what names a page lets a
query use, and what names a query uses.

- :func:`queryable`: the series names a scraped page offers: every sample
  name, plus the names a declared family (``# TYPE``) would have once it has
  samples (a labelled counter that never counted is on the page as a family
  without series: a query of it is right, just empty);
- :func:`promql_names`: the metric names an expression selects: identifiers
  that are not functions (followed by ``(``), keywords, label names (inside
  ``{}`` or after ``by``/``on``/... ), durations (inside ``[]``) or strings.
"""

from __future__ import annotations

import re
import urllib.request

_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})? \S+", re.M)
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum"),
             "gaugehistogram": ("_bucket", "_gcount", "_gsum")}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
            "bool", "inf", "nan", "atan2"}


def scrape(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def families(page: str) -> dict[str, str]:
    """``# TYPE`` lines: family name -> type."""
    return dict(_TYPE.findall(page))


def queryable(page: str) -> set[str]:
    names = set(_SAMPLE.findall(page))
    for name, kind in families(page).items():
        names.update(name + s for s in _SUFFIXES.get(kind, ("",)))
    return names


def promql_names(expr: str) -> set[str]:
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    out = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or name.lower() in KEYWORDS or name.startswith("$"):
            continue
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] in ".$"):
            continue  # the exponent of 1e3, a Grafana $variable
        out.add(name)
    return out
