// At 390 px (a phone): no horizontal scrolling anywhere, even with a long
// unbroken word; the list and the conversation are two screens with a back
// button between them.
import { test, expect } from "@playwright/test";
import { convItem, messageWith, newUser, send, startDm, uid } from "../lib.mjs";

const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

async function expectNoHorizontalScroll(page, where) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    client: document.documentElement.clientWidth,
  }));
  expect(scroll, `horizontal scroll on ${where}`).toBeLessThanOrEqual(client);
  // Nothing cut off either (an overflow: hidden would hide the scroll bar, not
  // the problem): each box on screen, and each message's text within its box
  // (the list's previews may be cut with an ellipsis: that is by design).
  const wide = await page.evaluate((w) => [...document.querySelectorAll('[data-testid="message-body"], [data-testid="conv-item"], [data-testid="composer"]')]
    .filter((el) => el.offsetParent !== null)
    .filter((el) => {
      const r = el.getBoundingClientRect();
      const clipped = el.getAttribute("data-testid") === "message-body" && el.scrollWidth > el.clientWidth + 1;
      return r.left < -1 || r.right > w + 1 || clipped;
    })
    .map((el) => `${el.getAttribute("data-testid")} ${el.getBoundingClientRect().right}/${el.scrollWidth}`), client);
  expect(wide, `elements outside the ${client} px screen on ${where}`).toEqual([]);
}

test("works at 390 px: two screens, back button, no horizontal scroll", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"), PHONE);
  const bob = await newUser(browser, uid("bob"));
  await expectNoHorizontalScroll(alice.page, "the empty list");

  await startDm(bob.page, alice.user);
  const long = "x".repeat(300);
  for (const body of ["hello from a desktop", long, "https://example.invalid/" + "very-long-path/".repeat(20)]) await send(bob.page, body);
  const conv = await messageWith(bob.page, "hello from a desktop").getAttribute("data-conv");

  const item = convItem(alice.page, conv);
  await expect(item).toBeVisible();
  await expectNoHorizontalScroll(alice.page, "the list");
  await item.click();
  // The conversation replaces the list.
  await expect(alice.page.getByTestId("messages")).toBeVisible();
  await expect(alice.page.getByTestId("conv-list")).toBeHidden();
  await expect(messageWith(alice.page, long)).toHaveCount(1);
  await expect(alice.page.getByTestId("composer")).toBeInViewport();
  await expectNoHorizontalScroll(alice.page, "the conversation");

  await send(alice.page, "sent from a phone");
  await expect(messageWith(bob.page, "sent from a phone")).toHaveCount(1);
  await expectNoHorizontalScroll(alice.page, "the conversation after sending");

  await alice.page.getByTestId("back").click();
  await expect(alice.page.getByTestId("conv-list")).toBeVisible();
  await expect(alice.page.getByTestId("composer")).toBeHidden();
  await expect(item.getByTestId("conv-last")).toContainText("sent from a phone");
  await expectNoHorizontalScroll(alice.page, "the list after back");

  // New chat from the phone: the form is reachable and opens the conversation screen.
  const carol = uid("carol");
  await alice.page.getByTestId("new-dm-user").fill(carol);
  await alice.page.getByTestId("new-dm-submit").click();
  await expect(alice.page.getByTestId("conv-header")).toContainText(carol);
  await expect(alice.page.getByTestId("conv-list")).toBeHidden();
  await expectNoHorizontalScroll(alice.page, "a new chat");
});
