"""Guards on the parts of libraries that are not their documented API.

Switchboard borrows a few library internals (a private attribute, an alias a
module does not export) where no public way exists. A library that renames
one would otherwise make a feature stop without a word (a TLS check that no
longer sees the server's INFO, say). So every such use lives in ONE module
here per library, and that module:

- declares ``SUPPORTED``, the version range the code was checked against,
  the same specifier as the library's requirement in pyproject.toml
  (tests/unit/test_compat.py holds the two equal);
- calls :func:`check` at import: the installed version must be in that range
  and every borrowed attribute must be there, else one
  :class:`~switchboard.errors.IncompatibleLibrary` names the library, its
  version and what is missing;
- exports the functions and constants callers use instead of the private
  names, so a caller never spells one.

Modules: :mod:`switchboard.compat.natspy` (nats-py),
:mod:`switchboard.compat.websockets` (websockets' sans-I/O protocol, driven by
edge/transport.py), :mod:`switchboard.compat.cassandra_driver` (the archive's
batch rows; imported by the Cassandra store only, and its range is the
``cassandra`` extra's). To bump a library: widen ``SUPPORTED`` and the pin in
pyproject.toml together, then run ``pytest tests/unit/test_compat.py``.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping

from switchboard.errors import IncompatibleLibrary

__all__ = ["check", "in_range", "installed_version", "parse_spec", "release"]

# The specifiers SUPPORTED may use: a lower bound and an upper bound, both
# needed (an open-ended range would let an unchecked release in).
_SPEC = re.compile(r"\s*>=\s*(?P<lo>[0-9][0-9.]*)\s*,\s*<\s*(?P<hi>[0-9][0-9.]*)\s*")
_RELEASE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def installed_version(dist: str) -> str:
    """The installed version of distribution ``dist`` (a module-level
    function so the tests can pretend another one is installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise IncompatibleLibrary(f"{dist} is not installed (its package metadata is missing); "
                                  f"install the project: pip install -e .") from None


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"17.4"`` -> (17, 4),
    ``"18.0rc1"`` -> (18, 0). A pre-release of the lower bound counts as
    the bound itself (close enough for a guard)."""
    m = _RELEASE.match(version.strip().lstrip("vV"))
    if m is None:
        raise IncompatibleLibrary(f"cannot read the version {version!r}")
    return tuple(int(p) for p in m.group().split("."))


def parse_spec(spec: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``">=2.16,<2.17"`` -> ((2, 16), (2, 17))."""
    m = _SPEC.fullmatch(spec)
    if m is None:
        raise ValueError(f"supported range {spec!r}: write it as '>=LOW,<HIGH'")
    return release(m["lo"]), release(m["hi"])


def in_range(version: str, spec: str) -> bool:
    lo, hi = parse_spec(spec)
    v = release(version)
    return lo <= v < hi


def check(dist: str, spec: str, borrowed: Mapping[str, Callable[[], object]]) -> str:
    """Check ``dist`` against ``spec`` and probe each borrowed attribute;
    return the installed version.

    ``borrowed`` maps a dotted name (as the error shows it) to a probe that
    returns the attribute and raises AttributeError (or KeyError) when the
    library lacks it. Raises one :class:`IncompatibleLibrary` naming all that
    is missing."""
    version = installed_version(dist)
    if not in_range(version, spec):
        raise IncompatibleLibrary(
            f"{dist} {version} is installed, but Switchboard is written against {dist}{spec} "
            f"(pyproject.toml): install that range, e.g. pip install '{dist}{spec}'")
    missing = []
    for name, probe in borrowed.items():
        try:
            probe()
        except (AttributeError, KeyError):
            missing.append(name)
    if missing:
        raise IncompatibleLibrary(
            f"{dist} {version} lacks {', '.join(missing)}, which Switchboard relies on "
            f"(switchboard/compat/); install {dist}{spec} as pinned in pyproject.toml")
    return version
