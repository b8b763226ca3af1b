"""Check UI-format workflows (ComfyUI front end, schema 0.4) against node definitions, without ComfyUI.

Node definitions are ``/object_info`` entries (ComfyUI's V1 JSON view). The widget rules are the
front end's (comfyui-frontend-package 1.27): one widget per INT/FLOAT/STRING/BOOLEAN/COMBO input in
``input_order`` (required, then optional), an extra "control after generate" value after an INT
with ``control_after_generate``, an extra upload-button value after a combo with ``image_upload``;
``widgets_values`` lists them positionally; ``inputs`` lists every input of the node (sockets and
widgets, the upload button too) by name and type.

Schemas (:func:`workflow_schemas`): our nodes' entries come from the node code (tests/comfy_stub
derives them without ComfyUI; a live server in the integration tests), native nodes' from the
snapshot ``workflow_schemas/native_object_info.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_BUTTON_VALUE = "image"
FRONT_END_NOTE_NODES = frozenset({"Note", "MarkdownNote"})
"""Nodes the front end registers itself (virtual, never sent to the server): one text widget."""

DYNAMIC_FOLDERS = {
    ("MOVAModelLoader", "model_name"): "mova",
    ("MOVALoraLoader", "lora_name"): "loras",
    ("LoadImage", "image"): "input",
    ("LoadAudio", "audio"): "input",
}
"""Combos listing a folder's content at run time: compared by type only, any file name passes."""

PORTABLE_OPTIONS = {("MOVAModelLoader", "attention"): ("comfy", "sdpa")}
"""Combos whose options depend on installed packages: only the options every install offers count."""

KEPT_OPTION_KEYS = ("default", "min", "max", "step", "round", "options", "multiline", "dynamicPrompts",
                    "control_after_generate", "image_upload", "forceInput", "display")
KEPT_NODE_KEYS = ("input", "input_order", "output", "output_name", "output_is_list", "output_node", "category")
NATIVE_SNAPSHOT = Path(__file__).resolve().parent / "workflow_schemas" / "native_object_info.json"


@dataclass(frozen=True)
class Widget:
    """One serialised widget value: ``kind`` is an input type, ``CONTROL`` or ``UPLOAD``."""

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Input:
    name: str
    type: str
    options: dict[str, Any]
    optional: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")


def load_schemas(path: Path) -> dict[str, dict[str, Any]]:
    """The ``nodes`` of a schema snapshot file written by :func:`snapshot`."""
    return json.loads(path.read_text(encoding="utf-8"))["nodes"]


def _same_on_every_install(node_class: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with folder listings replaced by a ``dynamic_folder`` marker and package-dependent
    choices cut down to the ones every install offers."""
    if (node_class, name) in DYNAMIC_FOLDERS:
        return {**options, "options": [], "dynamic_folder": DYNAMIC_FOLDERS[node_class, name]}
    if (node_class, name) in PORTABLE_OPTIONS:
        return {**options, "options": [o for o in options.get("options", []) if o in PORTABLE_OPTIONS[node_class, name]]}
    return options


def _input_type_and_options(node_class: str, name: str, entry: list[Any]) -> tuple[str, dict[str, Any]]:
    kind, options = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    if isinstance(kind, list):  # legacy combo: the option list stands in the type position
        kind, options = "COMBO", {**options, "options": kind}
    kept = {key: options[key] for key in KEPT_OPTION_KEYS if key in options}
    return kind, _same_on_every_install(node_class, name, kept)


def comparable(node_class: str, info: dict[str, Any]) -> dict[str, Any]:
    """A whole V3 node's ``/object_info`` entry (tooltips and descriptions included) without what differs
    between installs: ``python_module`` (the pack's folder name), folder listings, package-dependent choices, and
    keys a ComfyUI version serves as null (0.9 adds ``output_matchtypes: null`` to every V3 node)."""
    out = {key: value for key, value in info.items() if key != "python_module" and value is not None}
    out["input"] = {
        section: entries if section == "hidden" else
        {name: [kind, _same_on_every_install(node_class, name, options)] for name, (kind, options) in entries.items()}
        for section, entries in info.get("input", {}).items()
    }
    return out


def normalize(node_class: str, info: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``/object_info`` entry that decide whether a workflow is valid (no tooltips,
    no descriptions; folder listings and package-dependent options made machine-independent)."""
    out = {key: info[key] for key in KEPT_NODE_KEYS if key in info}
    out["input"] = {
        section: {name: list(_input_type_and_options(node_class, name, entry)) for name, entry in entries.items()}
        for section, entries in info.get("input", {}).items() if section != "hidden"
    }
    out["input_order"] = {section: names for section, names in info.get("input_order", {}).items() if section != "hidden"}
    return out


def snapshot(object_info: dict[str, Any], node_classes: list[str], source: str) -> dict[str, Any]:
    """The snapshot file content for ``node_classes`` taken from a live ``/object_info``."""
    return {"source": source, "nodes": {name: normalize(name, object_info[name]) for name in sorted(node_classes)}}


def workflow_schemas(pack_object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What to check workflows against: the pack's nodes from ``pack_object_info`` (``/object_info``
    entries) and native nodes from :data:`NATIVE_SNAPSHOT`."""
    natives = load_schemas(NATIVE_SNAPSHOT)
    if natives.keys() & pack_object_info.keys():
        raise ValueError(f"{sorted(natives.keys() & pack_object_info.keys())} are in {NATIVE_SNAPSHOT.name}, which "
                         "is for native nodes only: refresh it (MOVA_UPDATE_SCHEMA_SNAPSHOT=1 with COMFYUI_PATH)")
    return {**natives, **{name: normalize(name, info) for name, info in pack_object_info.items()}}


def inputs(spec: dict[str, Any]) -> list[Input]:
    """All inputs in the front end's order (required, then optional)."""
    out = []
    for section in ("required", "optional"):
        for name in spec.get("input_order", {}).get(section, spec["input"].get(section, {}).keys()):
            kind, options = spec["input"][section][name]
            out.append(Input(name, kind, options, section == "optional"))
    return out


def widgets(spec: dict[str, Any]) -> list[Widget]:
    """The widget values a workflow stores for a node, in order."""
    out = []
    for item in inputs(spec):
        if not item.is_widget:
            continue
        out.append(Widget(item.name, item.type, item.options))
        if item.type == "INT" and item.options.get("control_after_generate"):
            out.append(Widget("control_after_generate", "CONTROL"))
        if item.type == "COMBO" and item.options.get("image_upload"):
            out.append(Widget("upload", "UPLOAD"))
    return out


def _decimals(step: float) -> int:
    text = repr(float(step))
    return 0 if "e" in text else len(text.split(".")[1].rstrip("0"))


def value_problem(widget: Widget, value: Any) -> str | None:
    """Why ``value`` would be rejected (server) or changed (front end) for this widget, or None."""
    opts, name = widget.options, widget.name
    if widget.kind == "CONTROL":
        return None if value in CONTROL_VALUES else f"{name}={value!r} is not one of {CONTROL_VALUES}"
    if widget.kind == "UPLOAD":
        return None if value == UPLOAD_BUTTON_VALUE else f"upload button value {value!r} should be {UPLOAD_BUTTON_VALUE!r}"
    if widget.kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if widget.kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    if widget.kind == "COMBO":
        if "dynamic_folder" in opts:
            ok = isinstance(value, str) and value.strip() != ""
            return None if ok else f"{name}={value!r} must name an entry of the {opts['dynamic_folder']} folder"
        return None if value in opts.get("options", []) else f"{name}={value!r} is not one of {opts.get('options')}"
    number_ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if widget.kind == "INT" and not (number_ok and float(value).is_integer()):
        return f"{name}={value!r} is not an integer"
    if not number_ok:
        return f"{name}={value!r} is not a number"
    low, high = opts.get("min", -math.inf), opts.get("max", math.inf)
    if not low <= value <= high:
        return f"{name}={value!r} is outside {low} .. {high}"
    step = opts.get("step")
    if widget.kind == "INT" and step and step > 1 and (value - opts.get("min", 0)) % step:
        return f"{name}={value!r} is off the step grid (min {opts.get('min', 0)}, step {step})"
    if widget.kind == "FLOAT" and step and abs(value - round(value, _decimals(step))) > 1e-9:
        return f"{name}={value!r} has more decimals than step {step}"
    return None


class WorkflowChecker:
    """Collects every problem of one UI workflow against ``schemas`` (node class -> normalised spec)."""

    def __init__(self, workflow: dict[str, Any], schemas: dict[str, dict[str, Any]]):
        self.workflow, self.schemas = workflow, schemas
        self.problems: list[str] = []
        self.nodes = {node.get("id"): node for node in workflow.get("nodes", [])}
        self.links = {link[0]: link for link in workflow.get("links", []) if isinstance(link, list) and link}

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def run(self) -> list[str]:
        self.check_header()
        for node in self.workflow.get("nodes", []):
            self.check_node(node)
        for link in self.workflow.get("links", []):
            self.check_link(link)
        self.check_outputs_exist()
        return self.problems

    def check_header(self) -> None:
        wf = self.workflow
        if wf.get("version") != 0.4:
            self.fail("workflow", f"version {wf.get('version')!r}: ship UI workflows in schema 0.4")
        for key, ids in (("last_node_id", self.nodes), ("last_link_id", self.links)):
            if ids and not (isinstance(wf.get(key), int) and wf[key] >= max(ids)):
                self.fail("workflow", f"{key}={wf.get(key)!r} is below the largest id {max(ids)}")
        if len(self.nodes) != len(wf.get("nodes", [])) or len(self.links) != len(wf.get("links", [])):
            self.fail("workflow", "node or link ids are not unique")

    def check_node(self, node: dict[str, Any]) -> None:
        kind, where = node.get("type"), f"node {node.get('id')} ({node.get('type')})"
        if node.get("mode", 0) != 0:
            self.fail(where, f"mode {node.get('mode')}: shipped workflows run every node (no muted/bypassed nodes)")
        if kind in FRONT_END_NOTE_NODES:
            values = node.get("widgets_values")
            if not (isinstance(values, list) and len(values) == 1 and isinstance(values[0], str)):
                self.fail(where, "a note keeps exactly one text value")
            return
        spec = self.schemas.get(kind)
        if spec is None:
            self.fail(where, "unknown node type (neither a node of the pack nor in the native snapshot)")
            return
        self.check_widgets(where, node, spec)
        self.check_inputs(where, node, spec)
        self.check_outputs(where, node, spec)

    def check_widgets(self, where: str, node: dict[str, Any], spec: dict[str, Any]) -> None:
        expected, values = widgets(spec), node.get("widgets_values", [])
        if not isinstance(values, list) or len(values) != len(expected):
            self.fail(where, f"{len(values) if isinstance(values, list) else values!r} widget values, the node has "
                             f"{len(expected)}: {[w.name for w in expected]}")
            return
        for widget, value in zip(expected, values):
            problem = value_problem(widget, value)
            if problem:
                self.fail(where, problem)

    def check_inputs(self, where: str, node: dict[str, Any], spec: dict[str, Any]) -> None:
        known = {item.name: item for item in inputs(spec)}
        extra_widgets = {w.name for w in widgets(spec) if w.kind in ("CONTROL", "UPLOAD")}
        linked, listed = set(), set()
        for slot, entry in enumerate(node.get("inputs", [])):
            name, link_id = entry.get("name"), entry.get("link")
            listed.add(name)
            if name in extra_widgets:
                continue
            if name not in known:
                self.fail(where, f"input {name!r} does not exist (inputs: {sorted(known)})")
                continue
            if entry.get("type") != known[name].type:
                self.fail(where, f"input {name!r} has type {entry.get('type')!r}, the node says {known[name].type!r}")
            if link_id is None:
                continue
            link = self.links.get(link_id)
            if link is None or link[3] != node["id"] or link[4] != slot:
                self.fail(where, f"input {name!r} points at link {link_id}, which does not end at this slot")
            linked.add(name)
        missing = [name for name in known if name not in listed]
        if missing:
            self.fail(where, f"inputs {missing} of the node are missing (a stale node: re-create it in the front end)")
        for item in known.values():
            if not item.optional and not item.is_widget and item.name not in linked:
                self.fail(where, f"required input {item.name!r} is not connected")

    def check_outputs(self, where: str, node: dict[str, Any], spec: dict[str, Any]) -> None:
        outputs = node.get("outputs", [])
        declared = list(zip(spec.get("output_name", []), spec.get("output", [])))
        if [(o.get("name"), o.get("type")) for o in outputs] != declared:
            self.fail(where, f"outputs {[(o.get('name'), o.get('type')) for o in outputs]} != node's {declared}")
        for slot, output in enumerate(outputs):
            for link_id in output.get("links") or []:
                link = self.links.get(link_id)
                if link is None or link[1] != node["id"] or link[2] != slot:
                    self.fail(where, f"output {output.get('name')!r} lists link {link_id}, which does not start here")

    def check_link(self, link: Any) -> None:
        if not (isinstance(link, list) and len(link) == 6):
            self.fail("links", f"{link!r} is not [id, origin, origin_slot, target, target_slot, type]")
            return
        link_id, origin_id, origin_slot, target_id, target_slot, kind = link
        where = f"link {link_id}"
        origin, target = self.nodes.get(origin_id), self.nodes.get(target_id)
        if origin is None or target is None:
            self.fail(where, f"joins missing nodes {origin_id} -> {target_id}")
            return
        outputs, target_inputs = origin.get("outputs", []), target.get("inputs", [])
        if not (0 <= origin_slot < len(outputs) and 0 <= target_slot < len(target_inputs)):
            self.fail(where, f"slot out of range ({origin_slot} -> {target_slot})")
            return
        out_type, in_entry = outputs[origin_slot].get("type"), target_inputs[target_slot]
        if kind != out_type:
            self.fail(where, f"carries {kind!r} but output {outputs[origin_slot].get('name')!r} is {out_type!r}")
        if in_entry.get("type") not in (out_type, "*"):
            self.fail(where, f"{out_type!r} output into {in_entry.get('type')!r} input {in_entry.get('name')!r} "
                             f"of node {target_id} ({target.get('type')})")
        if in_entry.get("link") != link_id or link_id not in (outputs[origin_slot].get("links") or []):
            self.fail(where, "is not recorded on both of its ends")

    def check_outputs_exist(self) -> None:
        if not any(self.schemas.get(node.get("type"), {}).get("output_node") for node in self.nodes.values()):
            self.fail("workflow", "has no output node, so queuing it would do nothing")


def check_workflow(workflow: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> list[str]:
    """Every problem of ``workflow`` (empty list = loads and validates like the shipped ones must)."""
    return WorkflowChecker(workflow, schemas).run()


def to_api_prompt(workflow: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The API-format prompt the front end would queue for ``workflow`` (widgets by name, links as
    ``[origin id, slot]``; notes left out)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONT_END_NOTE_NODES:
            continue
        spec = schemas[node["type"]]
        stored = node.get("widgets_values", [])  # the front end leaves the key out for a node without widgets
        values = {w.name: v for w, v in zip(widgets(spec), stored) if w.kind not in ("CONTROL", "UPLOAD")}
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                link = links[entry["link"]]
                values[entry["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": values,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt
