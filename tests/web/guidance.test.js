// Unit tests of the guidance pad's pure logic (web/lib/guidance.js): `node --test tests/web`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BRIDGE_AXIS, PRESETS, TEXT_AXIS, axisFromWidgetOptions, describeValues, formatValue, fromFraction,
  keyToValues, matchingPreset, narrowedTo, officialValues, pointerToPosition, positionToValues, presetValues, snap,
  stepDecimals, ticks, toFraction, valuesToPosition,
} from "../../web/lib/guidance.js";

const AXES = { text: TEXT_AXIS, bridge: BRIDGE_AXIS };

test("contract axes: text 0..20, bridge 0..10, step 0.1, official 5 / 1", () => {
  assert.deepEqual([TEXT_AXIS.min, TEXT_AXIS.max, TEXT_AXIS.step, TEXT_AXIS.official], [0, 20, 0.1, 5]);
  assert.deepEqual([BRIDGE_AXIS.min, BRIDGE_AXIS.max, BRIDGE_AXIS.step, BRIDGE_AXIS.official], [0, 10, 0.1, 1]);
  assert.deepEqual(officialValues(AXES), { text: 5, bridge: 1 });
});

test("stepDecimals counts the decimals of a step", () => {
  assert.equal(stepDecimals(0.1), 1);
  assert.equal(stepDecimals(0.005), 3);
  assert.equal(stepDecimals(1), 0);
  assert.equal(stepDecimals(1e-7), 7);
  assert.equal(stepDecimals(0), 0);
});

test("snap clamps to the range and lands exactly on the step grid", () => {
  assert.equal(snap(25, TEXT_AXIS), 20);
  assert.equal(snap(-3, TEXT_AXIS), 0);
  assert.equal(snap(5.04, TEXT_AXIS), 5);
  assert.equal(snap(5.06, TEXT_AXIS), 5.1);
  assert.equal(snap(0.1 + 0.2, TEXT_AXIS), 0.3); // no 0.30000000000000004
  assert.equal(snap("7.25", BRIDGE_AXIS), 7.3);
  assert.equal(snap(Number.NaN, BRIDGE_AXIS), 1, "garbage falls back to the official value");
  assert.equal(snap(undefined, TEXT_AXIS), 5);
  const odd = { ...TEXT_AXIS, min: 0.05, max: 1, step: 0.1 };
  assert.equal(snap(0.52, odd), 0.55, "grid counted from min");
  assert.equal(snap(1, odd), 0.95, "never above max when max is off the grid");
});

test("fractions follow the square-root scale: official text CFG mid-axis", () => {
  assert.equal(toFraction(0, TEXT_AXIS), 0);
  assert.equal(toFraction(20, TEXT_AXIS), 1);
  assert.equal(toFraction(5, TEXT_AXIS), 0.5);
  assert.ok(Math.abs(toFraction(1, BRIDGE_AXIS) - Math.sqrt(0.1)) < 1e-12);
  assert.equal(fromFraction(0.5, TEXT_AXIS), 5);
  assert.equal(fromFraction(1.7, BRIDGE_AXIS), 10);
  assert.equal(fromFraction(-1, BRIDGE_AXIS), 0);
  assert.equal(fromFraction(Number.NaN, BRIDGE_AXIS), 0);
  const linear = { ...TEXT_AXIS, gamma: 1 };
  assert.equal(toFraction(5, linear), 0.25);
  assert.equal(fromFraction(0.25, linear), 5);
  assert.equal(toFraction(5, { ...TEXT_AXIS, gamma: undefined }), 0.25, "no gamma = linear");
});

test("the root scale gives low values more room than high ones", () => {
  const low = toFraction(2, BRIDGE_AXIS) - toFraction(0, BRIDGE_AXIS);
  const high = toFraction(10, BRIDGE_AXIS) - toFraction(8, BRIDGE_AXIS);
  assert.ok(low > 4 * high, `${low} vs ${high}`);
  for (let f = 0; f <= 1; f += 0.01) {
    assert.ok(fromFraction(f + 0.01, TEXT_AXIS) >= fromFraction(f, TEXT_AXIS), "monotonic");
  }
});

test("pad position: x = text CFG to the right, y = bridge CFG upwards", () => {
  const official = valuesToPosition({ text: 5, bridge: 1 }, AXES);
  assert.equal(official.x, 0.5);
  assert.ok(Math.abs(official.y - (1 - Math.sqrt(0.1))) < 1e-12);
  assert.deepEqual(valuesToPosition({ text: 20, bridge: 10 }, AXES), { x: 1, y: 0 });
  assert.deepEqual(positionToValues({ x: 0, y: 1 }, AXES), { text: 0, bridge: 0 });
  assert.deepEqual(positionToValues({ x: 0.5, y: 0.5 }, AXES), { text: 5, bridge: 2.5 });
  for (const values of [{ text: 3.7, bridge: 8.2 }, { text: 0, bridge: 10 }, { text: 19.9, bridge: 0.1 }]) {
    assert.deepEqual(positionToValues(valuesToPosition(values, AXES), AXES), values, "round trip");
  }
});

test("pointerToPosition is relative to the rect and clamped", () => {
  const rect = { left: 100, top: 50, width: 200, height: 100 };
  assert.deepEqual(pointerToPosition(150, 75, rect), { x: 0.25, y: 0.25 });
  assert.deepEqual(pointerToPosition(0, 500, rect), { x: 0, y: 1 });
  assert.deepEqual(pointerToPosition(10, 10, { left: 0, top: 0, width: 0, height: 0 }), { x: 0, y: 0 });
});

test("axisFromWidgetOptions reads step2, the legacy 10x step, and falls back on nonsense", () => {
  const fromStep2 = axisFromWidgetOptions({ min: 0, max: 15, step: 1, step2: 0.1 }, TEXT_AXIS);
  assert.deepEqual([fromStep2.min, fromStep2.max, fromStep2.step, fromStep2.name], [0, 15, 0.1, "text_cfg"]);
  assert.equal(axisFromWidgetOptions({ min: 0, max: 10, step: 0.5 }, BRIDGE_AXIS).step, 0.05);
  assert.deepEqual(axisFromWidgetOptions(undefined, BRIDGE_AXIS), BRIDGE_AXIS);
  assert.equal(axisFromWidgetOptions({ min: 5, max: 5 }, BRIDGE_AXIS), BRIDGE_AXIS);
  assert.equal(axisFromWidgetOptions({ min: "a", max: null, step2: -1 }, TEXT_AXIS).step, TEXT_AXIS.step);
});

test("presets: official first, distinct, inside the contract ranges, directions as documented", () => {
  assert.equal(PRESETS[0].id, "official");
  assert.equal(new Set(PRESETS.map((p) => `${p.text}/${p.bridge}`)).size, PRESETS.length);
  for (const preset of PRESETS) assert.deepEqual(presetValues(preset, AXES), { text: preset.text, bridge: preset.bridge });
  const byId = Object.fromEntries(PRESETS.map((p) => [p.id, p]));
  assert.ok(byId.lipsync.bridge > 1, "stronger lip-sync amplifies the bridge");
  assert.ok(byId.speech.bridge < 1, "cleaner speech weakens the bridge");
});

test("matchingPreset finds the preset within half a step, else null", () => {
  assert.equal(matchingPreset({ text: 5, bridge: 1 }, AXES).id, "official");
  assert.equal(matchingPreset({ text: 5.04, bridge: 2 }, AXES).id, "lipsync");
  assert.equal(matchingPreset({ text: 5.1, bridge: 1 }, AXES), null);
});

test("presets clamp into a narrowed range", () => {
  const narrow = { text: { ...TEXT_AXIS, max: 4.5 }, bridge: { ...BRIDGE_AXIS, min: 0.8 } };
  assert.deepEqual(presetValues(PRESETS[2], narrow), { text: 4, bridge: 0.8 });
  assert.deepEqual(officialValues(narrow), { text: 4.5, bridge: 1 });
});

test("keyboard: arrows step, Shift steps 10x, PageUp/Down, Home, digits, clamping", () => {
  const at = { text: 5, bridge: 1 };
  assert.deepEqual(keyToValues("ArrowRight", {}, at, AXES), { text: 5.1, bridge: 1 });
  assert.deepEqual(keyToValues("ArrowLeft", {}, at, AXES), { text: 4.9, bridge: 1 });
  assert.deepEqual(keyToValues("ArrowUp", {}, at, AXES), { text: 5, bridge: 1.1 });
  assert.deepEqual(keyToValues("ArrowDown", { shiftKey: true }, at, AXES), { text: 5, bridge: 0 });
  assert.deepEqual(keyToValues("ArrowRight", { shiftKey: true }, at, AXES), { text: 6, bridge: 1 });
  assert.deepEqual(keyToValues("PageUp", {}, at, AXES), { text: 5, bridge: 2 });
  assert.deepEqual(keyToValues("PageDown", {}, { text: 5, bridge: 0.4 }, AXES), { text: 5, bridge: 0 });
  assert.deepEqual(keyToValues("ArrowRight", {}, { text: 20, bridge: 10 }, AXES), { text: 20, bridge: 10 });
  assert.deepEqual(keyToValues("Home", {}, { text: 12, bridge: 7 }, AXES), { text: 5, bridge: 1 });
  assert.deepEqual(keyToValues("2", {}, at, AXES), { text: 5, bridge: 2 });
  assert.deepEqual(keyToValues("3", {}, at, AXES), { text: 4, bridge: 0.7 });
  assert.equal(keyToValues("9", {}, at, AXES), null, "no ninth preset");
  assert.equal(keyToValues("ArrowUp", { ctrlKey: true }, at, AXES), null, "leave shortcuts alone");
  assert.equal(keyToValues("z", {}, at, AXES), null);
  assert.deepEqual(keyToValues("ArrowUp", {}, { text: 5, bridge: 1.04 }, AXES), { text: 5, bridge: 1.1 },
    "steps from the snapped value");
});

test("formatting and the accessible description", () => {
  assert.equal(formatValue(5, TEXT_AXIS), "5.0");
  assert.equal(formatValue(0.75, { ...BRIDGE_AXIS, step: 0.05 }), "0.75");
  assert.equal(formatValue(30, TEXT_AXIS), "30.0", "a value beyond the pad reads as it is");
  assert.equal(formatValue(5.04, TEXT_AXIS), "5.0");
  assert.equal(formatValue("x", BRIDGE_AXIS), "1.0");
  assert.equal(describeValues({ text: 5, bridge: 1 }, AXES), "Text CFG 5.0, bridge cfg 1.0 (Official)");
  assert.equal(describeValues({ text: 6, bridge: 3 }, AXES), "Text CFG 6.0, bridge cfg 3.0");
});

test("ticks: min, max and spaced round numbers (powers of ten first, then 5s, then 2s)", () => {
  assert.deepEqual(ticks(TEXT_AXIS), [0, 1, 5, 10, 20]);
  assert.deepEqual(ticks(BRIDGE_AXIS), [0, 1, 5, 10]);
  assert.deepEqual(ticks({ min: 0, max: 10, step: 0.1, gamma: 1 }), [0, 2, 5, 10]);
  assert.deepEqual(ticks({ min: 0.5, max: 3, step: 0.1, gamma: 1 }), [0.5, 1, 2, 3]);
  for (const axis of [TEXT_AXIS, BRIDGE_AXIS]) {
    const at = ticks(axis).map((v) => toFraction(v, axis));
    at.slice(1).forEach((f, i) => assert.ok(f - at[i] >= 0.15, `${axis.name} ticks too close`));
  }
});

test("narrowedTo: a sampler's cfg (0..100) spans MOVA's text CFG range on the pad", () => {
  const cfg = axisFromWidgetOptions({ min: 0, max: 100, step: 1, step2: 0.1 }, TEXT_AXIS);
  const padded = narrowedTo(cfg, TEXT_AXIS);
  assert.deepEqual([padded.min, padded.max, padded.step, padded.name], [0, 20, 0.1, "text_cfg"]);
  assert.equal(toFraction(5, padded), 0.5, "official text CFG mid-pad, as on MOVA Sampler");
  const narrow = narrowedTo({ ...TEXT_AXIS, min: 2, max: 8 }, TEXT_AXIS);
  assert.deepEqual([narrow.min, narrow.max], [2, 8], "a narrower widget keeps its own range");
  const apart = { ...TEXT_AXIS, min: 30, max: 40 };
  assert.equal(narrowedTo(apart, TEXT_AXIS), apart, "disjoint ranges: the widget's");
});
