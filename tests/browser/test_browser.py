"""The Playwright specs of the web app (tests/browser/specs/*.spec.mjs), each
one pytest test, against a real `switchboard up` driven by Debian's Chromium
(headless). `scripts/test` runs them with everything else; one spec alone:

    scripts/test tests/browser -k chat

A failure shows the spec's output; its Playwright trace and screenshot are in
tests/browser/test-results/<spec>/ (`npx playwright show-trace <zip>` there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import HERE, RESULTS, UP_TIMEOUT_SEC, run_playwright

SPECS = sorted((HERE / "specs").glob("*.spec.mjs"))
# Per spec: the slowest (bench: 200 messages at a light pace, edge kill and
# restart) take 30-60 s on the 2-core box; Playwright's own per-test timeout
# (playwright.config.mjs) fires first and names the step that hung.
SPEC_TIMEOUT_SEC = 240
# Specs that need the fabric without the development sign-in.
NO_DEV_SIGNIN = {"signin-off"}


def test_specs_exist():
    """A renamed specs/ directory must not silently leave zero browser tests."""
    assert len(SPECS) >= 8, SPECS


@pytest.mark.timeout(SPEC_TIMEOUT_SEC + UP_TIMEOUT_SEC + 30)  # the first spec also waits for `up`
@pytest.mark.parametrize("spec", SPECS, ids=[s.name.removesuffix(".spec.mjs") for s in SPECS])
def test_spec(spec: Path, browser_tools, request):
    name = spec.name.removesuffix(".spec.mjs")
    fabric = request.getfixturevalue("fabric_nodev" if name in NO_DEV_SIGNIN else "fabric")
    done = run_playwright(browser_tools, fabric, spec, timeout=SPEC_TIMEOUT_SEC)
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        pytest.fail(f"{spec.name} failed (exit {done.returncode}); traces/screenshots in "
                    f"{(RESULTS / name).relative_to(HERE.parents[1])}/\n"
                    f"{out[-6000:]}\n--- switchboard up log (tail) ---\n"
                    f"{fabric.log.read_text(errors='replace')[-1500:]}",
                    pytrace=False)
    # Playwright exits 0 when every test was skipped or none matched: neither is a pass.
    assert " passed" in out and " skipped" not in out, out[-3000:]
