// Template-browser thumbnails (workflows/<name>.jpg) from screenshots of the workflows in a running ComfyUI:
//   node tools/workflow_thumbnails.js http://127.0.0.1:8188 mova_i2va_voice mova_long_24s
// writes workflows/<name>.png (1416x702 shots of the canvas alone, zoomed out where the graph is larger); convert them with
//   python -c "from PIL import Image; import sys; [Image.open(f).convert('RGB').save(f[:-4]+'.jpg', quality=88) for f in sys.argv[1:]]" workflows/*.png
import { readFile } from "node:fs/promises";
import { launchBrowser, loadWorkflow, openComfy } from "../tests/web/e2e/browser.js";

const SHOT = { width: 1416, height: 702 };
const BARE_CANVAS = {  // settings hiding the minimap, render statistics, zoom buttons and workflow tabs
  "Comfy.Minimap.Visible": false, "Comfy.Graph.CanvasInfo": false, "Comfy.Graph.CanvasMenu": false,
  "Comfy.Workflow.WorkflowTabsPosition": "Sidebar",
};
const [baseUrl, ...names] = process.argv.slice(2);
const browser = await launchBrowser();
try {
  const page = await openComfy(browser, baseUrl, SHOT);
  const bare = await page.evaluate(async (hidden) => {  // the canvas alone, the user's settings kept aside
    const { setting, command } = window.app.extensionManager;
    const kept = Object.fromEntries(Object.keys(hidden).map((id) => [id, setting.get(id)]));
    for (const [id, value] of Object.entries(hidden)) await setting.set(id, value);
    await command.execute("Workspace.ToggleFocusMode");
    return kept;
  }, BARE_CANVAS);
  for (const name of names) {
    const workflow = JSON.parse(await readFile(`workflows/${name}.json`, "utf8"));
    await loadWorkflow(page, workflow, `${name}.json`);
    await page.evaluate(([width, height]) => {  // 78 %, or less where the graph would not fit the shot
      const nodes = window.app.graph.nodes;
      const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
      const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
      window.app.canvas.ds.offset = [40, 40];
      window.app.canvas.ds.scale = Math.min(0.78, (width - 60) / right, (height - 60) / bottom);
      window.app.graph.setDirtyCanvas(true, true);
    }, [SHOT.width, SHOT.height]);
    await page.waitForTimeout(1500);
    await page.screenshot({ path: `workflows/${name}.png`, clip: { x: 0, y: 0, ...SHOT } });
    const problems = page.movaLog.filter((entry) => /mova|LoadAudio|MOVALongVideo/i.test(JSON.stringify(entry)));
    console.log(name, problems.length ? JSON.stringify(problems) : "loaded without errors");
  }
  await page.evaluate(async (kept) => {
    for (const [id, value] of Object.entries(kept)) await window.app.extensionManager.setting.set(id, value);
    await window.app.extensionManager.command.execute("Workspace.ToggleFocusMode");
  }, bare);
} finally {
  await browser.close();
}
