// Unit tests of where the bridge guidance pad finds text CFG (web/lib/guidance_target.js): `node --test tests/web`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { samplersFedBy, textCfgSource } from "../../web/lib/guidance_target.js";

let nextId = 1;

/** A LiteGraph-like node: typed outputs, named widgets, and getOutputNodes(slot) over `links`. */
function node(type, { outputs = ["MODEL"], widgets = [], title } = {}) {
  const made = {
    id: nextId++, type, title, links: outputs.map(() => []),
    outputs: outputs.map((outputType) => ({ type: outputType })),
    widgets: widgets.map((name) => ({ name, value: 5 })),
    getOutputNodes(slot) { return this.links[slot].length ? this.links[slot] : null; },
  };
  return made;
}

function link(from, slot, to) {
  from.links[slot].push(to);
}

const ksampler = (title) => node("KSampler", { outputs: ["LATENT"], widgets: ["seed", "steps", "cfg"], title });

test("the sampler the MODEL feeds directly: its cfg widget", () => {
  const guidance = node("MOVABridgeGuidance", { widgets: ["bridge_cfg"] });
  const sampler = ksampler();
  link(guidance, 0, sampler);
  const source = textCfgSource(guidance);
  assert.equal(source.node, sampler);
  assert.equal(source.widget, sampler.widgets[2]);
  assert.equal(source.label, `cfg of KSampler #${sampler.id}`);
});

test("MODEL patches and reroutes in between are followed; other outputs and the sampler's LATENT are not", () => {
  const guidance = node("MOVABridgeGuidance");
  const shift = node("ModelSamplingSD3");
  const reroute = node("Reroute", { outputs: ["*"] });
  const guider = node("CFGGuider", { outputs: ["GUIDER"], widgets: ["cfg"], title: "text CFG" });
  const schedule = node("MOVASchedule", { outputs: ["SIGMAS"] });
  const latentUser = ksampler("second pass");
  link(guidance, 0, shift);
  link(shift, 0, reroute);
  link(reroute, 0, guider);
  link(guidance, 0, schedule);
  const fed = samplersFedBy(guidance);
  assert.deepEqual(fed, [guider], "MOVA Schedule takes the MODEL but has no cfg: not a sampler");
  assert.equal(textCfgSource(guidance).label, `cfg of text CFG #${guider.id}`, "the node's title names it");
  const unrelated = node("VAEDecode", { outputs: ["IMAGE"] });
  link(schedule, 0, unrelated);
  link(unrelated, 0, latentUser);
  assert.deepEqual(samplersFedBy(guidance), [guider], "IMAGE/SIGMAS links lead nowhere");
});

test("no sampler: bridge CFG only, and the reason says how to get text CFG", () => {
  const guidance = node("MOVABridgeGuidance");
  const source = textCfgSource(guidance);
  assert.equal(source.widget, undefined);
  assert.match(source.reason, /bridge CFG only .*KSampler or CFGGuider/);
  link(guidance, 0, node("ModelSamplingSD3"));
  assert.match(textCfgSource(guidance).reason, /no sampler/, "a patch without a sampler after it");
});

test("several samplers: none is chosen, each is named", () => {
  const guidance = node("MOVABridgeGuidance");
  const first = ksampler("high");
  const second = ksampler("low");
  link(guidance, 0, first);
  link(guidance, 0, second);
  const source = textCfgSource(guidance);
  assert.equal(source.widget, undefined);
  assert.match(source.reason, new RegExp(`feeds 2 samplers \\(high #${first.id}, low #${second.id}\\)`));
});

test("a sampler reached twice counts once; a cycle ends", () => {
  const guidance = node("MOVABridgeGuidance", { outputs: ["MODEL", "MODEL"] });
  const a = node("PatchA");
  const b = node("PatchB");
  const sampler = ksampler();
  link(guidance, 0, a);
  link(guidance, 1, b);
  link(a, 0, sampler);
  link(b, 0, sampler);
  link(a, 0, b);
  link(b, 0, a);
  assert.deepEqual(samplersFedBy(guidance), [sampler]);
  assert.equal(textCfgSource(guidance).node, sampler);
});

test("a node whose output list is missing or empty feeds nothing", () => {
  assert.deepEqual(samplersFedBy({ id: 1 }), []);
  assert.deepEqual(samplersFedBy({ id: 2, outputs: [{ type: "MODEL" }], getOutputNodes: () => null }), []);
});
