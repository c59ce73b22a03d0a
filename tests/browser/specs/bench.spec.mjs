// Measurements of the web app (reported, not asserted as timings): first
// paint of a fresh load, and send -> visible in the other tab over N messages
// typed at a light pace. It asserts only that every message arrives once and
// in order. Figures: printed as "WEB-BENCH {json}" and written to
// test-results/bench/web-bench.json; scripts/web-bench runs this spec and
// prints them as the table of docs/benchmarks.md ("Web app").
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { test, expect } from "@playwright/test";
import { expectOrdered, messageWith, messages, newUser, openAs, openConv, send, startDm, uid } from "../lib.mjs";

const N = Number(process.env.SB_WEB_BENCH_N || 200);
const GAP_MS = Number(process.env.SB_WEB_BENCH_GAP_MS || 100); // one message per 100 ms: a fast typist's pace x10
const LOADS = Number(process.env.SB_WEB_BENCH_LOADS || 5);

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
const round = (x) => Math.round(x * 10) / 10;

test(`first paint and send -> visible over ${N} messages`, async ({ browser }, info) => {
  test.setTimeout(60_000 + N * (GAP_MS + 150));
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));

  // First paint: fresh tabs of a signed-in user (the app's files from the edge, no cache).
  const paints = [];
  const ready = [];
  for (let i = 0; i < LOADS; i++) {
    const ctx = await browser.newContext();
    // When the app first shows itself online, in ms since navigation start
    // (a MutationObserver set up before the page's own scripts run).
    await ctx.addInitScript(() => {
      new MutationObserver((_, obs) => {
        if (document.querySelector('[data-testid="conn-state"][data-state="online"]')) {
          window.__onlineAt = performance.now();
          obs.disconnect();
        }
      }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
    });
    const page = await openAs(ctx, bob.user, bob.token);
    ready.push(await page.evaluate(() => window.__onlineAt));
    const entries = await page.evaluate(() => Object.fromEntries(performance.getEntriesByType("paint").map((e) => [e.name, e.startTime])));
    paints.push(entries);
    await ctx.close();
  }
  const fp = paints.map((e) => e["first-paint"]).filter((x) => x !== undefined).sort((a, b) => a - b);
  const fcp = paints.map((e) => e["first-contentful-paint"]).filter((x) => x !== undefined).sort((a, b) => a - b);
  expect(fcp.length, "paint entries recorded").toBe(LOADS);

  await startDm(alice.page, bob.user);
  await send(alice.page, "warm-up");
  const conv = await messageWith(alice.page, "warm-up").getAttribute("data-conv");
  await openConv(bob.page, conv);
  await expect(messageWith(bob.page, "warm-up")).toHaveCount(1);

  const warm = await alice.page.evaluate(() => window.__sbApp.timings.length);
  const loadBefore = loadavg()[0];
  const start = Date.now();
  for (let i = 0; i < N; i++) {
    await send(alice.page, `bench ${i}`);
    const wait = start + (i + 1) * GAP_MS - Date.now();
    if (wait > 0) await alice.page.waitForTimeout(wait);
  }
  await expect(messageWith(bob.page, `bench ${N - 1}`)).toHaveCount(1, { timeout: 30_000 });
  await expect(messages(bob.page)).toHaveCount(N + 1);
  const bodies = (await expectOrdered(bob.page)).map((m) => m.body);
  expect(bodies).toEqual(["warm-up", ...Array.from({ length: N }, (_, i) => `bench ${i}`)]);

  const sent = new Map(); // the bench messages only (not the warm-up)
  for (const t of (await alice.page.evaluate(() => window.__sbApp.timings)).slice(warm)) if (t.sentAt) sent.set(t.id, t.sentAt);
  const lat = [];
  const toServer = []; // sentAt -> the message's ts (stamped by the sequencer; same machine, same clock)
  const fromServer = []; // ts -> visible in bob's tab
  for (const t of await bob.page.evaluate(() => window.__sbApp.timings)) {
    if (!t.visibleAt || !sent.has(t.id)) continue;
    lat.push(t.visibleAt - sent.get(t.id));
    if (t.ts) {
      toServer.push(t.ts - sent.get(t.id));
      fromServer.push(t.visibleAt - t.ts);
    }
  }
  expect(lat.length, "timings of every bench message on both sides").toBe(N);
  for (const a of [lat, toServer, fromServer]) a.sort((x, y) => x - y);
  const summary = (a) => (a.length ? { p50: round(pct(a, 50)), p99: round(pct(a, 99)) } : null);

  const result = {
    messages: lat.length,
    pace_ms: GAP_MS,
    send_to_visible_ms: { p50: round(pct(lat, 50)), p90: round(pct(lat, 90)), p99: round(pct(lat, 99)), max: round(lat.at(-1)) },
    sent_to_sequenced_ms: summary(toServer),
    sequenced_to_visible_ms: summary(fromServer),
    first_paint_ms: { median: round(pct(fp, 50)), max: round(fp.at(-1)), all: fp.map(round) },
    first_contentful_paint_ms: { median: round(pct(fcp, 50)), max: round(fcp.at(-1)) },
    navigation_to_online_ms: { median: round(pct(ready.sort((a, b) => a - b), 50)), max: round(ready.at(-1)) },
    loads: LOADS,
    // The 1-minute load average of the box (2 cores) around the send phase:
    // other jobs on a shared machine show up in the tails.
    loadavg_1m: [round(loadBefore), round(loadavg()[0])],
    chromium: browser.version(),
  };
  console.log(`WEB-BENCH ${JSON.stringify(result)}`);
  writeFileSync(join(info.project.outputDir, "web-bench.json"), JSON.stringify(result, null, 2) + "\n");
});
