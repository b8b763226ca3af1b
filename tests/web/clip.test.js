// Unit tests of the clip player's pure helpers (web/lib/clip.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { clipFacts, clipKey, formatDuration, pickClip, viewQuery } from "../../web/lib/clip.js";

test("pickClip takes the first video entry of the UI output", () => {
  const output = { images: [{ filename: "a.png", subfolder: "", type: "temp" },
    { filename: "mova_00001_.MP4", subfolder: "MOVA", type: "output" }], animated: [true] };
  assert.deepEqual(pickClip(output), { filename: "mova_00001_.MP4", subfolder: "MOVA", type: "output" });
  assert.deepEqual(pickClip({ video: [{ filename: "x.webm" }] }), { filename: "x.webm", subfolder: "", type: "output" });
  assert.equal(pickClip({ images: [{ filename: "a.png" }] }), null);
  assert.equal(pickClip(undefined), null);
  assert.equal(pickClip({ images: [null, { filename: 3 }] }), null);
});

test("viewQuery escapes names and clipKey identifies a file", () => {
  const clip = { filename: "my clip&1.mp4", subfolder: "MOVA/a b", type: "output" };
  assert.equal(viewQuery(clip), "filename=my+clip%261.mp4&subfolder=MOVA%2Fa+b&type=output");
  assert.equal(clipKey(clip), "output/MOVA/a b/my clip&1.mp4");
  assert.equal(clipKey(null), "");
});

test("formatDuration shows minutes, seconds and tenths", () => {
  assert.equal(formatDuration(8), "0:08.0");
  assert.equal(formatDuration(65.34), "1:05.3");
  assert.equal(formatDuration(59.96), "1:00.0");
  assert.equal(formatDuration(Number.NaN), "");
  assert.equal(formatDuration(Infinity), "");
  assert.equal(formatDuration(-1), "");
});

test("clipFacts lists only what is known", () => {
  assert.deepEqual(clipFacts({ width: 640, height: 352, duration: 8, hasSound: true }), ["640×352", "0:08.0", "with sound"]);
  assert.deepEqual(clipFacts({ width: 0, height: 0, duration: Number.NaN, hasSound: false }), ["silent"]);
  assert.deepEqual(clipFacts({}), []);
});
