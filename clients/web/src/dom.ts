/** DOM helpers. Text always goes in with textContent: no user data ever
 * reaches innerHTML. */

export type Attrs = Record<string, string | boolean | undefined | null>;

/** An element with attributes (a false/null/undefined value omits the
 * attribute, true sets it empty) and its text set with textContent. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) for (const k in attrs) {
    const v = attrs[k];
    if (v === true) el.setAttribute(k, "");
    else if (v !== false && v != null) el.setAttribute(k, v);
  }
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The element with this data-testid (present in index.html). */
export function $<T extends HTMLElement = HTMLElement>(testid: string): T {
  return document.querySelector(`[data-testid="${testid}"]`) as T;
}

/** Set text only when it changed (saves style recalculation on busy lists). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

export function show(el: HTMLElement, visible: boolean): void {
  el.hidden = !visible;
}
