// Photographs the app as alice (run by tests/browser/screenshots.py, which
// starts the fabric and seeds it): docs/img/app-desktop.png (1280x800, list
// and open conversation) and docs/img/app-phone.png (390x844, the open
// conversation). Selects by the app's data-testid contract only.
import { join } from "node:path";
import { chromium } from "@playwright/test";

const { SB_BASE_URL: base, SB_TOKEN: token, SB_CONV: conv, SB_OUT: out } = process.env;
const browser = await chromium.launch({ executablePath: process.env.SB_CHROMIUM || "/usr/bin/chromium", headless: true });

async function shoot(name, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, isMobile: viewport.width < 500, hasTouch: viewport.width < 500 });
  const page = await context.newPage();
  await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  await page.locator('[data-testid="conn-state"][data-state="online"]').waitFor();
  await page.locator(`[data-testid="conv-item"][data-conv="${conv}"]`).click();
  await page.locator('[data-testid="message"]').last().waitFor();
  await page.locator('[data-testid="typing"]', { hasText: "bob" }).waitFor({ timeout: 10_000 }).catch(() => {});
  await page.waitForTimeout(300); // fonts and the last layout pass
  const path = join(out, name);
  await page.screenshot({ path });
  console.log(`wrote ${path}`);
  await context.close();
}

try {
  await shoot("app-desktop.png", { width: 1280, height: 800 });
  await shoot("app-phone.png", { width: 390, height: 844 });
} finally {
  await browser.close();
}
