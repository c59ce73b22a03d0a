// Playwright settings of the browser tests. Run by tests/browser/test_browser.py,
// which starts `switchboard up` and passes its address in SB_BASE_URL.
// Chromium is Debian's (/usr/bin/chromium, SB_CHROMIUM overrides): Playwright's
// own browser downloads are never used.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "specs",
  // Wiped by Playwright at the start of a run: one directory per spec, so a
  // later spec does not erase an earlier spec's failure trace.
  outputDir: process.env.SB_PW_OUT || "test-results/all",
  fullyParallel: false,
  workers: 1, // 2 cores shared with the fabric under test
  retries: 0, // a flaky spec is a bug to fix, not to retry
  timeout: 120_000,
  expect: { timeout: 10_000 },
  reporter: [["list"]],
  use: {
    baseURL: process.env.SB_BASE_URL,
    browserName: "chromium",
    headless: true,
    launchOptions: { executablePath: process.env.SB_CHROMIUM || "/usr/bin/chromium" },
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    actionTimeout: 10_000,
    navigationTimeout: 15_000,
  },
});
