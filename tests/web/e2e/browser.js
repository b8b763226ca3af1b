// Chromium + ComfyUI front-end helpers for the end-to-end test (playwright-core, no browser download).
import { chromium } from "playwright-core";

export const PACK_URL_PART = "/extensions/comfyui-mova-av/";
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync"];

/** Debian's chromium (or CHROMIUM_PATH) with the flags a sandboxed CI machine needs. */
export function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", args: CHROMIUM_FLAGS });
}

// What ComfyUI 0.3.64 with front end 1.27.10 logs on its own on a fresh install, with or without
// this pack (seen with an empty web/ folder): optional user files that do not exist yet, and a
// settings-panel error raised while the front end registers its core settings.
const FRONT_END_BASELINE = [
  /\/user\.css$/, /\/favicon\.ico$/, /\/api\/userdata\?dir=/, /\/api\/userdata\/comfy\.templates\.json$/,
];

// Front end 1.36 (ComfyUI 0.9) warns from its own mask editor extension's init, with or without this pack.
const FRONT_END_WARNINGS = [/^\[MaskEditor\] ComfyApp\.open_maskeditor is deprecated\./];

/** True for a log entry the bare front end produces by itself (see FRONT_END_BASELINE, FRONT_END_WARNINGS). */
export function isFrontEndBaseline(entry) {
  if (entry.kind === "pageerror") return /addSetting/.test(entry.stack ?? "") && !isOurs(entry);
  if (entry.kind === "console.warning" && FRONT_END_WARNINGS.some((pattern) => pattern.test(entry.text))) return !isOurs(entry);
  const missingFile = entry.kind === "http.404" || /status of 404/.test(entry.text);
  return missingFile && FRONT_END_BASELINE.some((pattern) => pattern.test(entry.url ?? ""));
}

/** True when a console line, page error or failed request comes from this pack. */
export function isOurs(entry) {
  const text = `${entry.text ?? ""} ${entry.url ?? ""} ${entry.stack ?? ""}`;
  return text.includes(PACK_URL_PART) || /\bmova\b/i.test(text);
}

/**
 * Open the ComfyUI front end at `baseUrl`, record console warnings/errors, page errors and failed
 * requests in `page.movaLog`, and wait until the MOVA nodes are registered.
 */
export async function openComfy(browser, baseUrl, { width = 1600, height = 1000 } = {}) {
  // A fresh ComfyUI user opens the template browser over the canvas on first visit.
  await fetch(new URL("api/settings/Comfy.TutorialCompleted", baseUrl), { method: "POST", body: "true" });
  const page = await browser.newPage({ viewport: { width, height } });
  const log = [];
  page.on("console", (message) => {
    if (["warning", "error"].includes(message.type())) {
      log.push({ kind: `console.${message.type()}`, text: message.text(), url: message.location().url });
    }
  });
  page.on("pageerror", (error) => log.push({ kind: "pageerror", text: error.message, stack: error.stack }));
  page.on("response", (response) => {
    if (response.status() >= 400) log.push({ kind: `http.${response.status()}`, text: "", url: response.url() });
  });
  page.movaLog = log;
  await page.goto(baseUrl, { waitUntil: "load" });
  await page.waitForFunction(() => Boolean(window.app?.graph && window.LiteGraph?.registered_node_types?.MOVASampler),
    null, { timeout: 120000 });
  return page;
}

/** Load a UI-format workflow into the canvas as if the user opened the file. */
export async function loadWorkflow(page, workflow, name) {
  await page.evaluate(async ([data, filename]) => {
    await window.app.loadGraphData(data, true, true, filename);
  }, [workflow, name]);
  await page.waitForTimeout(500); // DOM widgets are positioned on the next animation frames
}

/** The first node of a class: its id, widget values by name and on-screen rectangle of a DOM widget. */
export function nodeState(page, comfyClass) {
  return page.evaluate((cls) => {
    const node = window.app.graph.nodes.find((n) => n.comfyClass === cls);
    if (!node) return null;
    return { id: node.id, size: [...node.size], values: Object.fromEntries(node.widgets.map((w) => [w.name, w.value])) };
  }, comfyClass);
}
