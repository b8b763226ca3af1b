// End-to-end check of the MOVA front end in a real browser against a running ComfyUI:
//   node tests/web/e2e/run_e2e.js --url http://127.0.0.1:8188 --workflow workflows/mova_i2va_basic.json \
//        --native-workflow workflows/mova_native_custom_sampler.json --load-workflow workflows/mova_native_ksampler.json \
//        --artifacts /tmp/mova-e2e [--small '{"width":64,"height":48,"frames":5,"steps":2}']
// Loads a shipped workflow, drags and keys the guidance pad, checks both widgets and the saved workflow,
// queues the prompt, waits for the clip player's video. Then the same for the native-sampling workflow
// (stock sampler nodes, no missing node; the pad on MOVA Bridge Guidance sets the CFGGuider's cfg, and
// bridge CFG alone once the MODEL feeds no sampler or several); each --load-workflow only loads (no unknown
// node; a bridge guidance pad names the sampler it sets). Fails on any console error or warning of
// ours. Prints a JSON summary; exits 1 with the reason on failure. Driven by
// tests/integration/test_web_e2e.py (which starts ComfyUI with a tiny model).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { BRIDGE_AXIS, TEXT_AXIS, positionToValues } from "../../../web/lib/guidance.js";
import { isFrontEndBaseline, isOurs, launchBrowser, loadWorkflow, nodeState, openComfy } from "./browser.js";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    workflow: { type: "string" },
    "native-workflow": { type: "string" },
    "load-workflow": { type: "string", multiple: true, default: [] },
    artifacts: { type: "string", default: "e2e-artifacts" },
    small: { type: "string", default: '{"width":64,"height":48,"frames":5,"steps":2}' },
    "run-timeout": { type: "string", default: "600" },
  },
});
const AXES = { text: TEXT_AXIS, bridge: BRIDGE_AXIS };
const MISSING_TOAST = "MOVA model folder not found";
const summary = { steps: [] };

function step(name, detail = {}) {
  summary.steps.push({ name, ...detail });
}

async function shot(page, name, locator) {
  const file = path.join(args.artifacts, `${name}.png`);
  await (locator ?? page).screenshot({ path: file });
  return file;
}

/** Centre the canvas on a node at 100% zoom so its DOM widgets are on screen and full size. */
async function focusNode(page, comfyClass) {
  await page.evaluate((cls) => {
    const canvas = window.app.canvas;
    const node = window.app.graph.nodes.find((n) => n.comfyClass === cls);
    canvas.ds.scale = 1;
    canvas.centerOnNode(node);
    canvas.setDirty(true, true);
  }, comfyClass);
  await page.waitForTimeout(400);
}

async function setWidgets(page, comfyClass, values) {
  await page.evaluate(([cls, entries]) => {
    const node = window.app.graph.nodes.find((n) => n.comfyClass === cls);
    for (const [name, value] of Object.entries(entries)) node.widgets.find((w) => w.name === name).value = value;
    node.setDirtyCanvas(true, true);
  }, [comfyClass, values]);
}

async function dragPad(page, from, to, pad = page.locator(".mova-gpad").first()) {
  const box = await pad.locator(".mova-gpad__plot").boundingBox();
  const at = (f) => [box.x + f.x * box.width, box.y + f.y * box.height];
  await page.mouse.move(...at(from));
  await page.mouse.down();
  await page.mouse.move(...at(to), { steps: 8 });
  await page.mouse.up();
  await page.waitForTimeout(200);
}

async function checkPad(page) {
  const before = (await nodeState(page, "MOVASampler")).values;
  assert.deepEqual([before.text_cfg, before.bridge_cfg], [5, 1], "the shipped workflow starts at the official 5 / 1");
  await focusNode(page, "MOVASampler");
  await shot(page, "01_pad_official", page.locator(".mova-gpad").first());

  const target = { x: 0.72, y: 0.28 };
  await dragPad(page, { x: 0.5, y: 0.7 }, target);
  const expected = positionToValues(target, AXES);
  const dragged = (await nodeState(page, "MOVASampler")).values;
  assert.ok(dragged.text_cfg !== 5 && dragged.bridge_cfg !== 1, `drag changed both widgets: ${JSON.stringify(dragged)}`);
  assert.ok(Math.abs(dragged.text_cfg - expected.text) <= 0.2 && Math.abs(dragged.bridge_cfg - expected.bridge) <= 0.2,
    `drag landed at ${dragged.text_cfg}/${dragged.bridge_cfg}, expected about ${expected.text}/${expected.bridge}`);
  step("drag", { from: [5, 1], to: [dragged.text_cfg, dragged.bridge_cfg] });
  await shot(page, "02_pad_dragged", page.locator(".mova-gpad").first());

  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowDown");
  const keyed = (await nodeState(page, "MOVASampler")).values;
  assert.deepEqual([keyed.text_cfg, keyed.bridge_cfg],
    [Number((dragged.text_cfg + 0.1).toFixed(1)), Number((dragged.bridge_cfg - 0.1).toFixed(1))], "arrow keys step 0.1");
  await page.keyboard.press("2");
  const preset = (await nodeState(page, "MOVASampler")).values;
  assert.deepEqual([preset.text_cfg, preset.bridge_cfg], [5, 2], "key 2 = stronger lip-sync preset");
  step("keyboard", { arrows: [keyed.text_cfg, keyed.bridge_cfg], preset: [preset.text_cfg, preset.bridge_cfg] });

  await setWidgets(page, "MOVASampler", { text_cfg: 6.5, bridge_cfg: 0.5 }); // typed into the number widgets
  await page.waitForTimeout(300);
  const readout = await page.locator(".mova-gpad__readout").first().textContent();
  assert.equal(readout, "6.5 / 0.5", "the pad follows the number widgets");
  await dragPad(page, { x: 0.5, y: 0.5 }, { x: 0.61, y: 0.36 });
  const final = (await nodeState(page, "MOVASampler")).values;
  step("widgets -> pad", { readout });

  await page.keyboard.press("Control+z");
  await page.waitForTimeout(500);
  const undone = (await nodeState(page, "MOVASampler")).values;
  assert.deepEqual([undone.text_cfg, undone.bridge_cfg], [5, 2], "Ctrl+Z restores the values before the last edits");
  assert.equal(await page.locator(".mova-gpad__readout").first().textContent(), "5.0 / 2.0", "the pad follows undo");
  await page.keyboard.press("Control+y");
  await page.waitForTimeout(500);
  const redone = (await nodeState(page, "MOVASampler")).values;
  assert.deepEqual([redone.text_cfg, redone.bridge_cfg], [final.text_cfg, final.bridge_cfg], "Ctrl+Y redoes them");
  step("undo / redo", { undone: [undone.text_cfg, undone.bridge_cfg], redone: [redone.text_cfg, redone.bridge_cfg] });

  const saved = await page.evaluate(() => window.app.graph.serialize());
  const sampler = saved.nodes.find((n) => n.type === "MOVASampler");
  const ownValues = await page.evaluate(() => {  // every widget but the pad, control_after_generate included
    const node = window.app.graph.nodes.find((n) => n.comfyClass === "MOVASampler");
    return node.widgets.filter((w) => w.type !== "mova-guidance-pad").length;
  });
  assert.equal(sampler.widgets_values.length, ownValues, "the pad adds no value of its own to the saved workflow");
  assert.deepEqual(sampler.widgets_values.slice(7, 9), [final.text_cfg, final.bridge_cfg], "saved in the normal widgets");
  step("saved workflow", { widgets_values: sampler.widgets_values });
  await shot(page, "03_pad_final", page.locator(".mova-gpad").first());
  return final;
}

/** Queue the loaded workflow; `expected` = {class_type: {input: value}} the posted prompt must carry. */
async function queueAndWatch(page, expected, shotName = "04_player") {
  await page.evaluate(() => {
    window.movaE2E = { error: null };
    window.comfyAPI.api.api.addEventListener("execution_error", (event) => { window.movaE2E.error = event.detail; });
  });
  const posted = page.waitForRequest((r) => r.url().endsWith("/prompt") && r.method() === "POST");
  const run = page.getByRole("button", { name: "Run", exact: true });
  if (await run.count()) await run.first().click();
  else await page.evaluate(() => window.app.queuePrompt(0, 1));
  const body = (await posted).postDataJSON();
  const queued = Object.fromEntries(Object.entries(expected).map(([classType, inputs]) => {
    const node = Object.values(body.prompt).find((n) => n.class_type === classType);
    return [classType, Object.fromEntries(Object.keys(inputs).map((name) => [name, node.inputs[name]]))];
  }));
  assert.deepEqual(queued, expected, "the queued prompt carries the pad's values");
  assert.ok(Object.values(body.prompt).every((n) => n.inputs.guidance_pad === undefined), "the pad sends nothing itself");
  step("queued", queued);

  await focusNode(page, "MOVAAVMux");
  await page.waitForFunction(() => {
    const video = document.querySelector(".mova-player video");
    return window.movaE2E.error || (video && !video.hidden && video.readyState >= 1 && video.duration > 0);
  }, null, { timeout: Number(args["run-timeout"]) * 1000, polling: 500 });
  const failure = await page.evaluate(() => window.movaE2E.error);
  assert.equal(failure, null, `the workflow failed on the server: ${failure?.exception_message}`);
  const clip = await page.evaluate(() => {
    const video = document.querySelector(".mova-player video");
    return { src: video.getAttribute("src"), duration: video.duration, width: video.videoWidth, height: video.videoHeight,
      muted: video.muted, controls: video.controls, videos: document.querySelectorAll("video").length,
      caption: document.querySelector(".mova-player__caption").textContent };
  });
  assert.ok(clip.src.includes("/view?") && clip.src.includes(".mp4"), clip.src);
  assert.equal(clip.muted, false, "the player plays the sound");
  assert.equal(clip.videos, 1, "one player, no second built-in preview");
  assert.match(clip.caption, /with sound/);
  await page.waitForTimeout(500);
  await shot(page, shotName, page.locator(".mova-player").first());
  step("player", clip);
  return clip;
}

/** Node types of the loaded graph that the front end does not know (a missing custom node). */
function unknownNodes(page) {
  return page.evaluate(() => window.app.graph.nodes.filter((n) => !window.LiteGraph.registered_node_types[n.type])
    .map((n) => n.type));
}

async function redraw(page) {
  await page.evaluate(() => window.app.canvas.setDirty(true, true));
  await page.waitForTimeout(300);
}

/** The pad of MOVA Bridge Guidance: text CFG is the cfg of the CFGGuider its MODEL feeds, found through the links. */
async function checkBridgePad(page) {
  const pad = page.locator('.mova-gpad[data-node-class="MOVABridgeGuidance"]');
  assert.equal(await pad.count(), 1, "the guidance pad is on MOVA Bridge Guidance");
  const cfgOf = async () => (await nodeState(page, "CFGGuider")).values.cfg;
  const bridgeOf = async () => (await nodeState(page, "MOVABridgeGuidance")).values.bridge_cfg;
  const guiderId = (await nodeState(page, "CFGGuider")).id;
  const source = pad.locator(".mova-gpad__source");
  const readout = pad.locator(".mova-gpad__readout");
  await focusNode(page, "MOVABridgeGuidance");
  assert.equal(await source.textContent(), `text CFG = cfg of CFGGuider #${guiderId}`);
  assert.equal(await readout.textContent(), "5.0 / 1.0", "the shipped workflow starts at the official 5 / 1");
  await shot(page, "10_bridge_pad_official", pad);

  const target = { x: 0.3, y: 0.2 };
  await dragPad(page, { x: 0.5, y: 0.7 }, target, pad);
  const expected = positionToValues(target, AXES); // the guider's cfg (0..100) spans MOVA's 0..20 on the pad
  const dragged = { cfg: await cfgOf(), bridge_cfg: await bridgeOf() };
  assert.ok(Math.abs(dragged.cfg - expected.text) <= 0.2 && Math.abs(dragged.bridge_cfg - expected.bridge) <= 0.2,
    `drag set cfg ${dragged.cfg} / bridge ${dragged.bridge_cfg}, expected about ${expected.text} / ${expected.bridge}`);
  await page.keyboard.press("ArrowLeft");
  assert.equal(await cfgOf(), Number((dragged.cfg - 0.1).toFixed(1)), "arrow keys step the guider's cfg");
  step("bridge pad drag", { to: [dragged.cfg, dragged.bridge_cfg] });

  await setWidgets(page, "CFGGuider", { cfg: 30 }); // typed into the guider, beyond the pad's 0..20
  await redraw(page);
  assert.match(await readout.textContent(), /^30\.0 \//, "the pad follows the guider's widget");
  await pad.locator(".mova-gpad__plot").focus();
  await page.keyboard.press("ArrowUp");
  assert.equal(await cfgOf(), 30, "a bridge-only key press leaves the guider's cfg as it is");
  assert.equal(await bridgeOf(), Number((dragged.bridge_cfg + 0.1).toFixed(1)));
  await setWidgets(page, "CFGGuider", { cfg: 6.5 });
  await redraw(page);

  const rewire = (action) => page.evaluate((what) => {
    const graph = window.app.graph;
    const bridge = graph.nodes.find((n) => n.comfyClass === "MOVABridgeGuidance");
    const guider = graph.nodes.find((n) => n.comfyClass === "CFGGuider");
    const modelInput = guider.inputs.findIndex((input) => input.name === "model");
    if (what === "cut") guider.disconnectInput(modelInput);
    if (what === "mend") bridge.connect(0, guider, modelInput);
    if (what === "second sampler") {
      const extra = window.LiteGraph.createNode("KSampler");
      extra.id = 900;
      graph.add(extra);
      bridge.connect(0, extra, 0);
    }
    if (what === "drop second sampler") graph.remove(graph.getNodeById(900));
    if (what === "patch between") {
      const shift = window.LiteGraph.createNode("ModelSamplingSD3");
      shift.id = 901;
      graph.add(shift);
      bridge.connect(0, shift, 0);
      shift.connect(0, guider, modelInput);
    }
    if (what === "drop patch") graph.remove(graph.getNodeById(901));
    graph.setDirtyCanvas(true, true);
  }, action);

  await rewire("cut");
  await redraw(page);
  assert.match(await source.textContent(), /no sampler on this MODEL: the pad sets bridge CFG only/);
  assert.match(await readout.textContent(), /^– \/ /);
  const before = { cfg: await cfgOf(), bridge_cfg: await bridgeOf() };
  await dragPad(page, { x: 0.5, y: 0.5 }, { x: 0.9, y: 0.1 }, pad);
  assert.equal(await cfgOf(), before.cfg, "without a sampler the pad leaves every cfg alone");
  assert.ok(await bridgeOf() > before.bridge_cfg, "and still sets bridge CFG");
  await shot(page, "11_bridge_pad_no_sampler", pad);
  step("bridge pad without a sampler", { source: await source.textContent() });

  await rewire("mend");
  await rewire("second sampler");
  await redraw(page);
  assert.match(await source.textContent(), new RegExp(`feeds 2 samplers \\(CFGGuider #${guiderId}, KSampler #900\\)`));
  await rewire("drop second sampler");
  await rewire("patch between");
  await redraw(page);
  assert.equal(await source.textContent(), `text CFG = cfg of CFGGuider #${guiderId}`, "followed through a MODEL patch");
  await rewire("drop patch");
  await rewire("mend");
  await redraw(page);
  assert.equal(await source.textContent(), `text CFG = cfg of CFGGuider #${guiderId}`, "re-wiring moves the pad back");

  await dragPad(page, { x: 0.5, y: 0.5 }, { x: 0.62, y: 0.4 }, pad);
  const final = { cfg: await cfgOf(), bridge_cfg: await bridgeOf() };
  assert.equal(await readout.textContent(), `${final.cfg.toFixed(1)} / ${final.bridge_cfg.toFixed(1)}`);
  const saved = (await page.evaluate(() => window.app.graph.serialize())).nodes
    .find((n) => n.type === "MOVABridgeGuidance");
  assert.deepEqual(saved.widgets_values, [final.bridge_cfg], "the pad adds nothing to the saved workflow");
  await shot(page, "12_bridge_pad_final", pad);
  step("bridge pad final", final);
  return final;
}

async function checkNativeWorkflow(page, file) {
  await loadWorkflow(page, JSON.parse(fs.readFileSync(file, "utf8")), path.basename(file));
  await page.waitForTimeout(1000);
  assert.deepEqual(await unknownNodes(page), [], "every node of the native workflow is known (core or MOVA)");
  assert.equal(await page.locator(".p-dialog:visible").count(), 0, "no missing-node or missing-model dialog");
  await shot(page, "09_native_loaded");
  step("native loaded", { workflow: path.basename(file) });
  const final = await checkBridgePad(page);
  const small = JSON.parse(args.small);
  await setWidgets(page, "MOVAAVLatent", { width: small.width, height: small.height, frames: small.frames });
  await setWidgets(page, "MOVASchedule", { steps: small.steps });
  return queueAndWatch(page, { CFGGuider: { cfg: final.cfg }, MOVABridgeGuidance: { bridge_cfg: final.bridge_cfg } },
    "13_native_player");
}

/** Load a workflow: every node known, and each bridge guidance pad bound to the one node with a cfg it feeds. */
async function checkLoads(page, file) {
  await loadWorkflow(page, JSON.parse(fs.readFileSync(file, "utf8")), path.basename(file));
  await page.waitForTimeout(500);
  assert.deepEqual(await unknownNodes(page), [], `every node of ${path.basename(file)} is known`);
  const pads = page.locator('.mova-gpad[data-node-class="MOVABridgeGuidance"] .mova-gpad__source');
  if (await pads.count()) await focusNode(page, "MOVABridgeGuidance"); // a pad follows the links when drawn
  const sources = await pads.allTextContents();
  assert.ok(sources.every((text) => /^text CFG = cfg of /.test(text)), `${path.basename(file)}: ${sources}`);
  step("loads", { workflow: path.basename(file), pads: sources });
}

async function checkMissingModelToast(page, workflow) {
  const absent = structuredClone(workflow);
  const loader = absent.nodes.find((n) => n.type === "MOVAModelLoader");
  loader.widgets_values[0] = "MOVA-720p";
  loader.properties.models = [{ name: "MOVA-720p", url: "https://huggingface.co/OpenMOSS-Team/MOVA-720p", directory: "mova" }];
  await loadWorkflow(page, absent, "mova_missing_model.json");
  const toast = page.locator(".p-toast-message", { hasText: MISSING_TOAST });
  await toast.first().waitFor({ timeout: 10000 });
  assert.match(await toast.first().textContent(), /huggingface\.co\/OpenMOSS-Team\/MOVA-720p/);
  assert.equal(await page.locator(".p-dialog:visible").count(), 0, "no file-based missing-model dialog");
  await shot(page, "05_missing_model_toast");
  step("missing model toast");
}

async function main() {
  fs.mkdirSync(args.artifacts, { recursive: true });
  const workflow = JSON.parse(fs.readFileSync(args.workflow, "utf8"));
  const browser = await launchBrowser();
  let page;
  try {
    page = await openComfy(browser, args.url);
    await loadWorkflow(page, workflow, path.basename(args.workflow));
    await page.waitForTimeout(1000);
    assert.equal(await page.locator(".p-toast-message", { hasText: MISSING_TOAST }).count(), 0,
      "installed MOVA folder is not reported missing");
    assert.equal(await page.locator(".p-dialog:visible").count(), 0, "no missing-model dialog for an installed folder");
    assert.equal(await page.locator(".mova-gpad").count(), 1, "the guidance pad is on the sampler");
    assert.equal(await page.locator(".mova-player").count(), 1, "the clip player is on the mux node");
    await shot(page, "00_loaded");
    step("loaded", { workflow: path.basename(args.workflow) });

    await setWidgets(page, "MOVASampler", JSON.parse(args.small));
    const cfg = await checkPad(page);
    summary.clip = await queueAndWatch(page, { MOVASampler: { text_cfg: cfg.text_cfg, bridge_cfg: cfg.bridge_cfg } });
    await shot(page, "06_overview");
    if (args["native-workflow"]) summary.nativeClip = await checkNativeWorkflow(page, args["native-workflow"]);
    for (const file of args["load-workflow"]) await checkLoads(page, file);
    await checkMissingModelToast(page, workflow);

    const ours = page.movaLog.filter(isOurs);
    const unexplained = page.movaLog.filter((entry) => !isFrontEndBaseline(entry));
    summary.console = { ours, unexplained, baseline: page.movaLog.length - unexplained.length };
    assert.deepEqual(ours, [], "no console errors, warnings or failed requests from the MOVA pack");
    assert.deepEqual(unexplained, [], "nothing beyond the bare front end's own start-up noise");
    summary.ok = true;
  } catch (error) {
    if (page) await shot(page, "failure").catch(() => {});
    throw error;
  } finally {
    await browser.close();
    fs.writeFileSync(path.join(args.artifacts, "summary.json"), JSON.stringify(summary, null, 1));
  }
}

main().then(() => {
  console.log(JSON.stringify(summary));
}).catch((error) => {
  console.error(JSON.stringify(summary));
  console.error(error.stack ?? String(error));
  process.exit(1);
});
