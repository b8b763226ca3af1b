// Template-browser thumbnails (workflows/<name>.jpg) from screenshots of the workflows in a running ComfyUI:
//   node tools/workflow_thumbnails.js http://127.0.0.1:8188 mova_i2va_voice mova_long_24s
// writes workflows/<name>.png (1416x702 canvas shots); convert them with
//   python -c "from PIL import Image; import sys; [Image.open(f).convert('RGB').save(f[:-4]+'.jpg', quality=88) for f in sys.argv[1:]]" workflows/*.png
import { readFile } from "node:fs/promises";
import { launchBrowser, loadWorkflow, openComfy } from "../tests/web/e2e/browser.js";

const [baseUrl, ...names] = process.argv.slice(2);
const browser = await launchBrowser();
try {
  const page = await openComfy(browser, baseUrl, { width: 1416, height: 742 });
  for (const name of names) {
    const workflow = JSON.parse(await readFile(`workflows/${name}.json`, "utf8"));
    await loadWorkflow(page, workflow, `${name}.json`);
    await page.evaluate(() => { window.app.canvas.ds.offset = [40, 40]; window.app.canvas.ds.scale = 0.78;
                                window.app.graph.setDirtyCanvas(true, true); });
    await page.waitForTimeout(1500);
    await page.screenshot({ path: `workflows/${name}.png`, clip: { x: 0, y: 40, width: 1416, height: 702 } });
    const problems = page.movaLog.filter((entry) => /mova|LoadAudio|MOVALongVideo/i.test(JSON.stringify(entry)));
    console.log(name, problems.length ? JSON.stringify(problems) : "loaded without errors");
  }
} finally {
  await browser.close();
}
