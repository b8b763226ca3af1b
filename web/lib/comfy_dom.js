// Small DOM and front-end helpers shared by the MOVA web extensions. Everything that touches
// ComfyUI internals is feature-detected, so an older or newer front end degrades to "no extra
// UI" instead of throwing.

const STYLESHEET_ID = "mova-av-stylesheet";

/** `el("div.a.b", {title: "x"}, child, "text")`: an element with classes, attributes and children. */
export function el(tag, attributes = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const element = document.createElement(name);
  if (classes.length) element.classList.add(...classes);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") element.textContent = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

/** An SVG element (for the pad's grid and markers). */
export function svg(tag, attributes = {}) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/** Add the pack's stylesheet once (resolved next to this module, whatever the pack folder is called). */
export function ensureStylesheet() {
  if (document.getElementById(STYLESHEET_ID)) return;
  const link = el("link", { id: STYLESHEET_ID, rel: "stylesheet", href: new URL("../mova.css", import.meta.url).href });
  document.head.append(link);
}

/** The widget called `name` on `node`, or undefined. */
export function findWidget(node, name) {
  return node.widgets?.find((widget) => widget.name === name);
}

/** True when the widget's input socket is connected (the value then comes from the link). */
export function isWidgetLinked(node, name) {
  return Boolean(node.inputs?.some((input) => input.widget?.name === name && input.link != null));
}

/**
 * Set a widget's value the way a user edit does: the widget's own callback (rounding, other
 * extensions' hooks), `onWidgetChanged`, and the graph's version counter all run.
 */
export function setWidgetValue(app, node, widget, value) {
  if (widget.value === value) return;
  if (typeof widget.setValue === "function" && app.canvas) {
    widget.setValue(value, { e: undefined, node, canvas: app.canvas });
  } else {
    const old = widget.value;
    widget.value = value;
    widget.callback?.(widget.value, app.canvas, node);
    node.onWidgetChanged?.(widget.name, widget.value, old, widget);
  }
}

/** Redraw, and let the workflow's change tracker record the edit (undo, "modified" marker). */
export function commitGraphChange(app, node) {
  node.setDirtyCanvas?.(true, true);
  app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
}

/** Send wheel events over a DOM widget to the canvas, so zooming and panning work across it. */
export function forwardWheelToCanvas(app, element) {
  element.addEventListener("wheel", (event) => {
    const canvas = app.canvas?.canvas;
    if (!canvas) return;
    event.preventDefault();
    event.stopPropagation();
    const { clientX, clientY, deltaX, deltaY, deltaMode, ctrlKey, metaKey, shiftKey } = event;
    canvas.dispatchEvent(new WheelEvent("wheel", {
      clientX, clientY, deltaX, deltaY, deltaMode, ctrlKey, metaKey, shiftKey, bubbles: true, cancelable: true,
    }));
  }, { passive: false });
}

/** Chain `fn` after an existing prototype/instance method without losing its return value. */
export function chainMethod(target, name, fn) {
  const original = target[name];
  target[name] = function chained(...args) {
    const result = original?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}
