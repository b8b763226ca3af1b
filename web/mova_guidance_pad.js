// A 2-D guidance pad (x = text CFG, y = bridge CFG) on two nodes:
// - MOVA Sampler: bound to the node's own `text_cfg` and `bridge_cfg` widgets;
// - MOVA Bridge Guidance (native sampling): bridge CFG is the node's `bridge_cfg`, text CFG the
//   `cfg` widget of the KSampler / CFGGuider its MODEL feeds (lib/guidance_target.js, looked up
//   again on every redraw, so re-wiring moves it); without exactly one such node the pad sets
//   bridge CFG only and says so.
// The pad stores nothing itself (it is not serialised): the workflow keeps the numbers in the
// normal widget values, and the pad only reads and writes them, so workflows stay loadable and
// runnable without this extension.
import { app } from "../../scripts/app.js";

import {
  BRIDGE_AXIS, PRESETS, TEXT_AXIS, axisFromWidgetOptions, describeValues, formatValue, keyToValues,
  matchingPreset, narrowedTo, officialValues, pointerToPosition, positionToValues, presetValues, snap,
  snapValues, ticks, toFraction, valuesToPosition,
} from "./lib/guidance.js";
import { textCfgSource } from "./lib/guidance_target.js";
import {
  chainMethod, commitGraphChange, el, ensureStylesheet, findWidget, forwardWheelToCanvas, isWidgetLinked,
  setWidgetValue, svg,
} from "./lib/comfy_dom.js";

const SAMPLER_CLASS = "MOVASampler";
const BRIDGE_CLASS = "MOVABridgeGuidance";
const PAD_WIDGET_NAME = "guidance_pad";
const PAD_MIN_HEIGHT = 250;
const PAD_MAX_HEIGHT = 420;
const NODE_MIN_WIDTH = 360;
const KEY_HELP = "Arrow keys: left/right text CFG, up/down bridge CFG (Shift: x10). "
  + "Page Up/Down: bridge CFG by 1. Home: official default. 1-3: presets.";

function percent(fraction) {
  return `${(fraction * 100).toFixed(3)}%`;
}

/**
 * Where the two numbers live: `{text, bridge}`, each `{node, widget}`; text may instead be
 * `{reason}` (a MOVA Bridge Guidance node without exactly one sampler on its MODEL).
 */
function ownWidgets(node) {
  const sources = { text: { node, widget: findWidget(node, TEXT_AXIS.name) },
    bridge: { node, widget: findWidget(node, BRIDGE_AXIS.name) } };
  return () => sources;
}

function bridgeGuidanceWidgets(node) {
  const bridge = { node, widget: findWidget(node, BRIDGE_AXIS.name) };
  return () => ({ text: textCfgSource(node), bridge });
}

/** The pad of one node: DOM, pointer and keyboard handling, widget sync. */
class GuidancePad {
  constructor(node, findSources) {
    this.node = node;
    this.findSources = findSources;
    this.sources = findSources();
    this.lastRendered = "";
    this.dragging = false;
    this.element = this.build();
  }

  /** False when text CFG has no widget here (bridge CFG only). */
  get hasText() {
    return Boolean(this.sources.text.widget);
  }

  get axes() {
    const text = this.hasText
      ? narrowedTo(axisFromWidgetOptions(this.sources.text.widget.options, TEXT_AXIS), TEXT_AXIS) : TEXT_AXIS;
    return { text, bridge: axisFromWidgetOptions(this.sources.bridge.widget.options, BRIDGE_AXIS) };
  }

  /** The widgets' numbers as they are (text: the official value when there is no text widget). */
  get values() {
    return { text: this.hasText ? Number(this.sources.text.widget.value) : TEXT_AXIS.official,
      bridge: Number(this.sources.bridge.widget.value) };
  }

  /** Axes the pad must not write: linked widgets, and text CFG without a widget. */
  get locked() {
    const linked = (source) => isWidgetLinked(source.node, source.widget.name);
    return { text: !this.hasText || linked(this.sources.text), bridge: linked(this.sources.bridge) };
  }

  build() {
    this.readout = el("span.mova-gpad__readout", { "aria-hidden": "true" });
    this.presetName = el("span.mova-gpad__preset-name", { "aria-hidden": "true" });
    const head = el("div.mova-gpad__head", {},
      el("span.mova-gpad__title", { text: "Guidance" }), this.presetName, this.readout);
    this.sourceNote = el("div.mova-gpad__source");

    this.handle = el("div.mova-gpad__handle", { "aria-hidden": "true" });
    this.defaultMarker = el("div.mova-gpad__default", { "aria-hidden": "true", title: "Official default" },
      el("span.mova-gpad__diamond"), el("span.mova-gpad__default-label", { text: "official" }));
    this.grid = svg("svg", { class: "mova-gpad__grid", viewBox: "0 0 100 100", preserveAspectRatio: "none",
      "aria-hidden": "true" });
    const helpId = `mova-gpad-help-${Math.random().toString(36).slice(2, 10)}`;
    this.plot = el("div.mova-gpad__plot", {
      tabindex: 0, role: "slider", "aria-roledescription": "2D slider", "aria-label": "Text CFG and bridge CFG",
      "aria-describedby": helpId, "aria-keyshortcuts": "ArrowLeft ArrowRight ArrowUp ArrowDown PageUp PageDown Home 1 2 3",
    },
    this.grid,
    el("span.mova-gpad__corner.mova-gpad__corner--top", { text: "↑ bridge CFG · tighter sync", "aria-hidden": "true" }),
    el("span.mova-gpad__corner.mova-gpad__corner--right", { text: "text CFG · closer to prompt →", "aria-hidden": "true" }),
    this.defaultMarker, this.handle);
    this.xTicks = el("div.mova-gpad__ticks.mova-gpad__ticks--x", { "aria-hidden": "true" });
    this.yTicks = el("div.mova-gpad__ticks.mova-gpad__ticks--y", { "aria-hidden": "true" });
    const body = el("div.mova-gpad__body", {}, this.yTicks, this.plot, el("span"), this.xTicks);

    this.presetButtons = PRESETS.map((preset, index) => {
      const button = el("button.mova-gpad__preset", {
        type: "button", title: `${preset.hint} (key ${index + 1})`, "aria-pressed": "false",
        "data-preset": preset.id,
      }, el("span.mova-gpad__preset-label", { text: preset.label }),
      el("span.mova-gpad__preset-values", { text: `${preset.text.toFixed(1)} / ${preset.bridge.toFixed(1)}` }));
      button.addEventListener("click", () => this.apply(presetValues(preset, this.axes), true));
      return button;
    });
    const presets = el("div.mova-gpad__presets", { role: "group", "aria-label": "Guidance presets" },
      ...this.presetButtons);
    const help = el("span.mova-visually-hidden", { id: helpId, text: KEY_HELP });

    const root = el("div.mova-gpad", { "data-node-class": this.node.comfyClass }, head, this.sourceNote, body,
      presets, help);
    this.attachPointer();
    this.plot.addEventListener("keydown", (event) => this.onKeyDown(event));
    forwardWheelToCanvas(app, root);
    return root;
  }

  drawGrid() {
    const { text, bridge } = this.axes;
    const key = `${text.min}:${text.max}:${bridge.min}:${bridge.max}`;
    if (this.gridKey === key) return;
    this.gridKey = key;
    this.grid.replaceChildren();
    this.xTicks.replaceChildren();
    this.yTicks.replaceChildren();
    for (const value of ticks(text)) {
      const x = toFraction(value, text) * 100;
      this.grid.append(svg("line", { x1: x, x2: x, y1: 0, y2: 100, class: "mova-gpad__line" }));
      this.xTicks.append(el("span", { text: String(value), style: `left:${x}%` }));
    }
    for (const value of ticks(bridge)) {
      const y = 100 - toFraction(value, bridge) * 100;
      this.grid.append(svg("line", { x1: 0, x2: 100, y1: y, y2: y, class: "mova-gpad__line" }));
      this.yTicks.append(el("span", { text: String(value), style: `top:${y}%` }));
    }
    const official = valuesToPosition(officialValues(this.axes), this.axes);
    // Bridge CFG = official value (1.0): the cross-modal term is left as trained (no extra pass).
    this.grid.append(svg("line", {
      x1: 0, x2: 100, y1: official.y * 100, y2: official.y * 100, class: "mova-gpad__line mova-gpad__line--neutral",
    }));
    this.defaultMarker.style.left = percent(official.x);
    this.defaultMarker.style.top = percent(official.y);
    for (const dot of this.presetDots ?? []) dot.remove();
    this.presetDots = PRESETS.filter((preset) => preset.id !== "official").map((preset) => {
      const at = valuesToPosition(presetValues(preset, this.axes), this.axes);
      return el("div.mova-gpad__preset-dot", {
        "aria-hidden": "true", title: preset.label, style: `left:${percent(at.x)};top:${percent(at.y)}`,
      });
    });
    this.handle.before(...this.presetDots);
  }

  /**
   * Write values into the widgets, then redraw. Locked axes keep theirs, and so does an axis the
   * values do not move (a KSampler cfg beyond the pad's range survives a bridge-only key press).
   */
  apply(values, commit) {
    this.sources = this.findSources();
    const { axes, locked, values: current } = this;
    const next = snapValues(values, axes);
    for (const axis of ["text", "bridge"]) {
      if (!locked[axis] && next[axis] !== snap(current[axis], axes[axis])) {
        setWidgetValue(app, this.sources[axis].node, this.sources[axis].widget, next[axis]);
      }
    }
    this.render();
    if (commit) commitGraphChange(app, this.node);
    else this.node.setDirtyCanvas?.(true, false);
  }

  /** What the pad shows, as one string: a change by any route means a redraw. */
  stateKey() {
    const { values, locked, sources } = this;
    const text = sources.text.widget ? `${sources.text.node.id}.${values.text}` : sources.text.reason;
    return `${text}|${values.bridge}|${locked.text}|${locked.bridge}|${sources.text.label}`;
  }

  /** Redraw when the widgets or the wiring changed by any route (typing, undo, load, re-linking). */
  sync() {
    this.sources = this.findSources();
    if (this.stateKey() !== this.lastRendered) this.render();
  }

  render() {
    const axes = this.axes;
    const raw = this.values;
    const values = snapValues(raw, axes);
    const locked = this.locked;
    this.lastRendered = this.stateKey();
    this.drawGrid();
    const position = valuesToPosition(values, axes);
    this.handle.style.left = percent(position.x);
    this.handle.style.top = percent(position.y);
    const shown = (axis) => {
      if (axis === "text" && !this.hasText) return "–";
      return locked[axis] ? "link" : formatValue(raw[axis], axes[axis]);
    };
    this.readout.textContent = `${shown("text")} / ${shown("bridge")}`;
    const preset = this.hasText ? matchingPreset(values, axes) : null;
    const lockedNames = [locked.text && "text CFG", locked.bridge && "bridge CFG"].filter(Boolean);
    const linkedNames = lockedNames.filter((name) => name !== "text CFG" || this.hasText);
    this.presetName.textContent = linkedNames.length ? `${linkedNames.join(" and ")} from a link`
      : (!this.hasText ? "bridge CFG only" : (preset ? preset.label : "Custom"));
    this.presetName.classList.toggle("is-custom", !preset || lockedNames.length > 0);
    for (const button of this.presetButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.preset === preset?.id));
    }
    const source = this.sources.text;
    this.sourceNote.hidden = this.node.comfyClass !== BRIDGE_CLASS;
    this.sourceNote.textContent = source.widget ? `text CFG = ${source.label}` : `text CFG: ${source.reason}`;
    this.sourceNote.classList.toggle("is-missing", !source.widget);
    const description = this.hasText ? describeValues(raw, axes)
      : `Bridge CFG ${formatValue(raw.bridge, axes.bridge)}; text CFG: ${source.reason}`;
    this.plot.setAttribute("aria-valuenow", String(values.text));
    this.plot.setAttribute("aria-valuemin", String(axes.text.min));
    this.plot.setAttribute("aria-valuemax", String(axes.text.max));
    this.plot.setAttribute("aria-valuetext", description);
    this.plot.title = `${description}\n${KEY_HELP}`;
    this.element.classList.toggle("is-locked", lockedNames.length === 2);
    this.element.dataset.locked = lockedNames.join(",");
    this.plot.setAttribute("aria-disabled", String(lockedNames.length === 2));
  }

  attachPointer() {
    const moveTo = (event) => {
      const position = pointerToPosition(event.clientX, event.clientY, this.plot.getBoundingClientRect());
      this.apply(positionToValues(position, this.axes), false);
    };
    this.plot.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      event.stopPropagation();
      this.plot.focus({ preventScroll: true });
      this.plot.setPointerCapture?.(event.pointerId);
      this.dragging = true;
      this.element.classList.add("is-dragging");
      moveTo(event);
    });
    this.plot.addEventListener("pointermove", (event) => {
      if (this.dragging) moveTo(event);
    });
    const end = (event) => {
      if (!this.dragging) return;
      this.dragging = false;
      this.element.classList.remove("is-dragging");
      this.plot.releasePointerCapture?.(event.pointerId);
      commitGraphChange(app, this.node);
    };
    this.plot.addEventListener("pointerup", end);
    this.plot.addEventListener("pointercancel", end);
    this.plot.addEventListener("lostpointercapture", end);
  }

  onKeyDown(event) {
    const next = keyToValues(event.key, event, snapValues(this.values, this.axes), this.axes);
    if (!next) return;
    event.preventDefault();
    event.stopPropagation(); // keep arrows/digits away from canvas shortcuts while the pad has focus
    this.apply(next, true);
  }
}

function addGuidancePad(node, findSources) {
  if (typeof node.addDOMWidget !== "function") return; // front end without DOM widgets: numbers only
  const sources = findSources();
  if (!sources.bridge.widget || !(sources.text.widget || sources.text.reason) || findWidget(node, PAD_WIDGET_NAME)) {
    return;
  }
  ensureStylesheet();
  const pad = new GuidancePad(node, findSources);
  const widget = node.addDOMWidget(PAD_WIDGET_NAME, "mova-guidance-pad", pad.element, {
    serialize: false, // not in the API prompt
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => PAD_MIN_HEIGHT,
    getMaxHeight: () => PAD_MAX_HEIGHT,
    onDraw: () => pad.sync(),
  });
  widget.serialize = false; // not in widgets_values: the numbers live in the number widgets
  for (const numberWidget of node.comfyClass === SAMPLER_CLASS ? [sources.text.widget, sources.bridge.widget]
    : [sources.bridge.widget]) {
    chainMethod(numberWidget, "callback", () => pad.sync());
  }
  node.movaGuidancePad = pad;
  pad.render();
  const size = node.computeSize?.();
  if (size) node.setSize([Math.max(node.size[0], NODE_MIN_WIDTH), Math.max(node.size[1], size[1])]);
}

app.registerExtension({
  name: "mova.GuidancePad",
  nodeCreated(node) {
    if (node.comfyClass === SAMPLER_CLASS) addGuidancePad(node, ownWidgets(node));
    if (node.comfyClass === BRIDGE_CLASS) addGuidancePad(node, bridgeGuidanceWidgets(node));
  },
});
