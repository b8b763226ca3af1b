// Where the guidance pad of a MOVA Bridge Guidance node finds text CFG: the `cfg` widget of the
// sampler or guider that its MODEL output feeds (KSampler, KSamplerAdvanced, SamplerCustom,
// CFGGuider, ...), following MODEL links through nodes that pass a MODEL on (ModelSamplingSD3,
// LoRA loaders, reroutes). Uses only `outputs`, `getOutputNodes(slot)` and `widgets` of LiteGraph
// nodes, so `node --test` runs it on plain objects.

export const TEXT_CFG_WIDGET = "cfg";
const PASSED_ON = new Set(["MODEL", "*"]); // "*": a reroute's output

function modelSlots(node) {
  return (node.outputs ?? []).flatMap((output, slot) => (PASSED_ON.has(output?.type) ? [slot] : []));
}

function cfgWidget(node) {
  return node.widgets?.find((widget) => widget.name === TEXT_CFG_WIDGET);
}

/** The nodes with a `cfg` widget that `node`'s MODEL reaches (each once, nearest first). */
export function samplersFedBy(node) {
  const found = [];
  const seen = new Set([node]);
  const queue = [node];
  while (queue.length) {
    const current = queue.shift();
    for (const slot of modelSlots(current)) {
      for (const next of current.getOutputNodes?.(slot) ?? []) {
        if (!next || seen.has(next)) continue;
        seen.add(next);
        if (cfgWidget(next)) found.push(next);
        else queue.push(next);
      }
    }
  }
  return found;
}

function nodeLabel(node) {
  return `${node.title || node.type} #${node.id}`;
}

/**
 * The text CFG of a MOVA Bridge Guidance node: `{node, widget, label}` when its MODEL feeds exactly
 * one node with a `cfg` widget, else `{reason}` saying why the pad sets bridge CFG only.
 */
export function textCfgSource(node) {
  const samplers = samplersFedBy(node);
  if (samplers.length === 1) {
    return { node: samplers[0], widget: cfgWidget(samplers[0]), label: `cfg of ${nodeLabel(samplers[0])}` };
  }
  if (samplers.length === 0) {
    return { reason: "no sampler on this MODEL: the pad sets bridge CFG only (connect it to a KSampler or CFGGuider)" };
  }
  return { reason: `this MODEL feeds ${samplers.length} samplers (${samplers.map(nodeLabel).join(", ")}): `
    + "the pad sets bridge CFG only; set each cfg on its node" };
}
