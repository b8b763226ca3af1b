// Pure logic of the MOVA guidance pad: axes, value <-> pad mapping, clamping, presets and
// keyboard steps. No DOM and no ComfyUI imports, so `node --test` can load it directly.
//
// The pad is a rectangle: x = text CFG (left = min, right = max), y = bridge CFG (bottom = min,
// top = max). Positions are fractions in [0, 1] measured from the top-left corner, like the
// screen; values are always snapped to the widget's step and clamped to its range.
//
// Axes are square-root scaled (`gamma` 2): guidance acts roughly multiplicatively and the useful
// values sit low in the ranges (text 3..8 of 0..20, bridge 0.5..3 of 0..10), so a linear pad would
// squeeze them into one corner. With the root scale the official text CFG 5 lands mid-pad and
// bridge CFG 0..2 gets almost half the height, while the whole range stays reachable.

/** Fallback axes = the fixed node contract; the live widget options override them. */
export const TEXT_AXIS = Object.freeze({
  name: "text_cfg", label: "Text CFG", min: 0, max: 20, step: 0.1, official: 5.0, gamma: 2,
});
export const BRIDGE_AXIS = Object.freeze({
  name: "bridge_cfg", label: "Bridge CFG", min: 0, max: 10, step: 0.1, official: 1.0, gamma: 2,
});

// Presets. "Official" is the released MOVA setting: text CFG 5, bridge CFG 1 (= the plain
// text CFG of the official pipeline, no extra pass). Bridge CFG scales the difference the
// cross-modal bridge makes: > 1 amplifies the audio-video coupling (tighter lip-sync, one extra
// model pass per step), < 1 weakens it (the audio tower follows the video less, which trades
// sync for cleaner, less smeared speech).
// - Stronger lip-sync: bridge doubled (2.0), text unchanged so prompt adherence stays official;
//   2x is a clear but moderate push, past ~3 guidance-style over-amplification artefacts grow.
// - Cleaner speech: bridge 0.7 (coupling loosened, not removed) and text 4.0, because high text
//   CFG is the usual source of harsh, over-driven audio in diffusion models.
// These are starting points for interactive tuning, not measured optima.
export const PRESETS = Object.freeze([
  Object.freeze({
    id: "official", label: "Official", text: 5.0, bridge: 1.0,
    hint: "Released MOVA setting: text CFG 5, bridge CFG 1 (plain text CFG).",
  }),
  Object.freeze({
    id: "lipsync", label: "Stronger lip-sync", text: 5.0, bridge: 2.0,
    hint: "Bridge CFG 2 amplifies audio-video coupling: tighter lip-sync, one extra pass per step.",
  }),
  Object.freeze({
    id: "speech", label: "Cleaner speech", text: 4.0, bridge: 0.7,
    hint: "Looser coupling and gentler text guidance: cleaner speech, looser sync.",
  }),
]);

/** Number of decimals needed to show multiples of `step` exactly (0.1 -> 1, 0.005 -> 3). */
export function stepDecimals(step) {
  if (!(step > 0)) return 0;
  const text = String(step);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}

/** Decimals that represent every grid value of the axis (its step and its min). */
function axisDecimals(axis) {
  return Math.max(stepDecimals(axis.step), stepDecimals(Math.abs(axis.min)));
}

function finiteOr(value, fallback) {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

/**
 * An axis from a ComfyUI FLOAT widget's options ({min, max, step2} in the current front end;
 * older front ends only have the legacy `step`, which is 10x the real step). Missing or broken
 * fields fall back to `fallback`.
 */
export function axisFromWidgetOptions(options, fallback) {
  const opts = options ?? {};
  const legacyStep = typeof opts.step === "number" ? opts.step / 10 : undefined;
  const step = finiteOr(opts.step2, finiteOr(legacyStep, fallback.step));
  const min = finiteOr(opts.min, fallback.min);
  const max = finiteOr(opts.max, fallback.max);
  if (!(max > min) || !(step > 0)) return fallback;
  return Object.freeze({ ...fallback, min, max, step });
}

/**
 * `axis` narrowed to the range of `bounds`: the pad spans MOVA's text CFG range even where the
 * widget allows more (KSampler's and CFGGuider's cfg go to 100). Disjoint ranges keep `axis`.
 */
export function narrowedTo(axis, bounds) {
  const min = Math.max(axis.min, bounds.min);
  const max = Math.min(axis.max, bounds.max);
  return max > min ? Object.freeze({ ...axis, min, max }) : axis;
}

/** Clamp `value` to the axis range and snap it to the axis step grid (counted from min). */
export function snap(value, axis) {
  const v = finiteOr(Number(value), axis.official);
  const clamped = Math.min(axis.max, Math.max(axis.min, v));
  const steps = Math.round((clamped - axis.min) / axis.step);
  const snapped = Math.min(axis.max, axis.min + steps * axis.step);
  return Number(snapped.toFixed(axisDecimals(axis)));
}

function clamp01(f) {
  return Math.min(1, Math.max(0, finiteOr(f, 0)));
}

/** Where on the axis (0 = min, 1 = max) a value sits, on the axis' root scale. */
export function toFraction(value, axis) {
  const linear = (snap(value, axis) - axis.min) / (axis.max - axis.min);
  return linear ** (1 / (axis.gamma ?? 1));
}

/** The snapped value at a fraction of the axis (inverse of {@link toFraction}). */
export function fromFraction(fraction, axis) {
  return snap(axis.min + clamp01(fraction) ** (axis.gamma ?? 1) * (axis.max - axis.min), axis);
}

/** Pad position {x, y} (fractions from the top-left) of the values {text, bridge}. */
export function valuesToPosition(values, axes) {
  return { x: toFraction(values.text, axes.text), y: 1 - toFraction(values.bridge, axes.bridge) };
}

/** Snapped values {text, bridge} at a pad position {x, y}. */
export function positionToValues(position, axes) {
  return { text: fromFraction(position.x, axes.text), bridge: fromFraction(1 - position.y, axes.bridge) };
}

/** Pad position of a pointer at (clientX, clientY) over a rect {left, top, width, height}. */
export function pointerToPosition(clientX, clientY, rect) {
  if (!(rect.width > 0) || !(rect.height > 0)) return { x: 0, y: 0 };
  return { x: clamp01((clientX - rect.left) / rect.width), y: clamp01((clientY - rect.top) / rect.height) };
}

/** Snap both values (e.g. after reading widgets that hold out-of-range or off-grid values). */
export function snapValues(values, axes) {
  return { text: snap(values.text, axes.text), bridge: snap(values.bridge, axes.bridge) };
}

/** The preset's values, snapped into the given axes (a narrowed range still yields valid values). */
export function presetValues(preset, axes) {
  return snapValues({ text: preset.text, bridge: preset.bridge }, axes);
}

/** The preset the values sit on (within half a step on both axes), or null. */
export function matchingPreset(values, axes, presets = PRESETS) {
  const current = snapValues(values, axes);
  return presets.find((preset) => {
    const target = presetValues(preset, axes);
    return Math.abs(target.text - current.text) < axes.text.step / 2
      && Math.abs(target.bridge - current.bridge) < axes.bridge.step / 2;
  }) ?? null;
}

/** The official default values (the "official" preset). */
export function officialValues(axes, presets = PRESETS) {
  return presetValues(presets.find((p) => p.id === "official") ?? presets[0], axes);
}

const COARSE = 10; // Shift + arrow = 10 steps (1.0 CFG for a 0.1 step)

/**
 * The values after a key press on the focused pad, or null when the key is not ours.
 * Arrows left/right: text CFG -/+ one step; up/down: bridge CFG +/- one step; Shift: 10 steps.
 * PageUp/PageDown: bridge CFG +/- 10 steps. Home: official default. "1".."9": preset n.
 */
export function keyToValues(key, modifiers, values, axes, presets = PRESETS) {
  const mods = modifiers ?? {};
  if (mods.ctrlKey || mods.metaKey || mods.altKey) return null;
  const factor = mods.shiftKey ? COARSE : 1;
  const move = (dText, dBridge) => snapValues({
    text: snap(values.text, axes.text) + dText * axes.text.step,
    bridge: snap(values.bridge, axes.bridge) + dBridge * axes.bridge.step,
  }, axes);
  switch (key) {
    case "ArrowLeft": return move(-factor, 0);
    case "ArrowRight": return move(factor, 0);
    case "ArrowUp": return move(0, factor);
    case "ArrowDown": return move(0, -factor);
    case "PageUp": return move(0, COARSE);
    case "PageDown": return move(0, -COARSE);
    case "Home": return officialValues(axes, presets);
    default: break;
  }
  if (/^[1-9]$/.test(key) && !mods.shiftKey) {
    const preset = presets[Number(key) - 1];
    return preset ? presetValues(preset, axes) : null;
  }
  return null;
}

/**
 * A value formatted with the axis step's decimals (at least one: "5.0", "0.75"), not clamped: a
 * KSampler cfg of 30 reads "30.0" although the pad ends at 20.
 */
export function formatValue(value, axis) {
  return finiteOr(Number(value), axis.official).toFixed(Math.max(1, axisDecimals(axis)));
}

/** Text for screen readers and tooltips, e.g. "Text CFG 5.0, bridge CFG 1.0 (Official)". */
export function describeValues(values, axes, presets = PRESETS) {
  const preset = matchingPreset(values, axes, presets);
  const text = `${axes.text.label} ${formatValue(values.text, axes.text)}, `
    + `${axes.bridge.label.toLowerCase()} ${formatValue(values.bridge, axes.bridge)}`;
  return preset ? `${text} (${preset.label})` : text;
}

/**
 * Tick values for an axis' grid: min, max, then powers of ten, then 5s, then 2s (1-5-2 times a
 * power of ten) wherever they stay at least `minGap` (a fraction of the axis) from every tick.
 */
export function ticks(axis, minGap = 0.15) {
  const placed = [axis.min, axis.max];
  const fits = (value) => placed.every((other) => Math.abs(toFraction(value, axis) - toFraction(other, axis)) >= minGap);
  for (const mantissa of [1, 5, 2]) {
    for (let power = -3; power <= 6; power += 1) {
      const value = Number((mantissa * 10 ** power).toPrecision(6));
      if (value > axis.min && value < axis.max && fits(value)) placed.push(value);
    }
  }
  return placed.sort((a, b) => a - b);
}
