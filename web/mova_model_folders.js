// MOVA checkpoints are folders (model_index.json + components), but the front end's
// missing-model check compares `properties.models[].name` with the *files* of a model folder, so
// it would report an installed MOVA folder as missing on every load. For MOVA loaders this
// extension checks the folder against the loader's own list instead and, when it is missing,
// shows where to download it. The `properties.models` entries stay in the workflow unchanged.
import { app } from "../../scripts/app.js";

import { findWidget } from "./lib/comfy_dom.js";

const NODE_CLASS = "MOVAModelLoader";
const MODEL_FOLDER = "mova";
const MODEL_WIDGET = "model_name";
const TOAST_LIFE_MS = 20000;

/** Workflow nodes that are MOVA loaders with folder entries in `properties.models`. */
function folderModelNodes(graphData) {
  return (graphData?.nodes ?? []).filter((node) => node?.type === NODE_CLASS
    && Array.isArray(node.properties?.models)
    && node.properties.models.some((model) => model?.directory === MODEL_FOLDER));
}

function warnMissing(models) {
  const detail = models.map((model) => `${model.name}: download ${model.url} into models/${MODEL_FOLDER}/${model.name}`)
    .join("\n");
  const toast = app.extensionManager?.toast;
  if (typeof toast?.add === "function") {
    toast.add({ severity: "warn", summary: "MOVA model folder not found", detail, life: TOAST_LIFE_MS });
  }
}

let held = new Map(); // node id -> folder entries taken out of the front end's file check

app.registerExtension({
  name: "mova.ModelFolders",
  beforeConfigureGraph(graphData) {
    held = new Map();
    for (const node of folderModelNodes(graphData)) {
      held.set(node.id, node.properties.models.filter((model) => model.directory === MODEL_FOLDER));
      node.properties.models = node.properties.models.filter((model) => model.directory !== MODEL_FOLDER);
    }
  },
  afterConfigureGraph() {
    const missing = [];
    for (const [id, models] of held) {
      const node = app.graph?.getNodeById?.(id);
      if (!node) continue;
      const others = node.properties?.models ?? [];
      node.properties.models = [...models, ...others];
      const available = findWidget(node, MODEL_WIDGET)?.options?.values ?? [];
      const selected = findWidget(node, MODEL_WIDGET)?.value;
      missing.push(...models.filter((model) => model.name === selected && !available.includes(model.name)));
    }
    held = new Map();
    if (missing.length) warnMissing(missing);
  },
});
