"""Stand-in for ``comfy_api.latest.io`` of ComfyUI 0.3.64: the schema classes a V3 node builds, and
their V1 ``/object_info`` view (what ``GET /object_info`` serves for the node).

Only what decides the ``/object_info`` entry is modelled, following comfy_api/latest/_io.py:
- an input option left at None is not written; ``String`` always writes ``multiline`` (False unless
  set) and ``Combo`` always writes ``multiselect: False``;
- keyword names become the V1 keys of ``KEYS`` (``display_mode`` -> ``display``, ``force_input`` ->
  ``forceInput``, ``dynamic_prompts`` -> ``dynamicPrompts``); enums are written as their values;
- ``optional=True`` puts an input under ``optional``; an output node gets the hidden ``prompt`` and
  ``extra_pnginfo`` inputs; an output's name is its ``display_name``, else its type.
A keyword this module does not know raises TypeError, so a typo (or an option the stand-in does not
model yet) fails in CI instead of producing a silently different schema.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


def _plain(value: Any) -> Any:
    """``value`` as JSON writes it: enums as their values (an enum class as its values), tuples as lists."""
    if isinstance(value, type) and issubclass(value, Enum):
        return [member.value for member in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class Input:
    """A socket input; ``KEYS`` maps the accepted keywords to their V1 option keys."""

    io_type: ClassVar[str]
    KEYS: ClassVar[dict[str, str]] = {"display_name": "display_name", "tooltip": "tooltip", "lazy": "lazy"}
    ALWAYS: ClassVar[dict[str, Any]] = {}
    """Options written even when the node does not set them (V1 key -> value)."""

    def __init__(self, id: str, *, optional: bool = False, **options: Any):
        unknown = sorted(set(options) - set(self.KEYS))
        if unknown:
            raise TypeError(f"{type(self).__qualname__}({id!r}): keywords {unknown} are not accepted by ComfyUI "
                            "0.3.64, or not modelled yet in tests/comfy_stub/v3_io.py")
        self.id, self.optional, self.options = id, optional, options

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        """The V1 options of this input (``[type, options]`` in ``/object_info``)."""
        written = {self.KEYS[key]: _plain(value) for key, value in self.options.items() if value is not None}
        return {**self.ALWAYS, **written}


class WidgetInput(Input):
    KEYS = {**Input.KEYS, "default": "default", "socketless": "socketless", "force_input": "forceInput"}


class Output:
    io_type: ClassVar[str]

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def comfy_type(io_type: str):
    """Class decorator: give the type (and its ``Input``/``Output``, plain ones unless it defines its own) ``io_type``."""
    def bind(cls: type) -> type:
        cls.io_type = io_type
        for role, base in (("Input", Input), ("Output", Output)):
            own = cls.__dict__.get(role, base)
            setattr(cls, role, type(role, (own,), {"io_type": io_type, "__qualname__": f"{cls.__name__}.{role}"}))
        return cls
    return bind


def Custom(io_type: str) -> type:  # noqa: N802 - ComfyUI's name
    """A socket type such as ``io.Custom("MOVA_MODEL")``."""
    return comfy_type(io_type)(type(io_type, (), {}))


@comfy_type("BOOLEAN")
class Boolean:
    class Input(WidgetInput):
        KEYS = {**WidgetInput.KEYS, "label_on": "label_on", "label_off": "label_off"}


@comfy_type("INT")
class Int:
    class Input(WidgetInput):
        KEYS = {**WidgetInput.KEYS, "min": "min", "max": "max", "step": "step",
                "control_after_generate": "control_after_generate", "display_mode": "display"}


@comfy_type("FLOAT")
class Float:
    class Input(WidgetInput):
        KEYS = {**WidgetInput.KEYS, "min": "min", "max": "max", "step": "step", "round": "round",
                "display_mode": "display"}


@comfy_type("STRING")
class String:
    class Input(WidgetInput):
        KEYS = {**WidgetInput.KEYS, "multiline": "multiline", "placeholder": "placeholder",
                "dynamic_prompts": "dynamicPrompts"}
        ALWAYS = {"multiline": False}


@comfy_type("COMBO")
class Combo:
    class Input(WidgetInput):
        KEYS = {"options": "options", "display_name": "display_name", "tooltip": "tooltip", "lazy": "lazy",
                "default": "default", "socketless": "socketless", "control_after_generate": "control_after_generate",
                "image_folder": "image_folder"}
        ALWAYS = {"multiselect": False}

        def __init__(self, id: str, options: Any = None, *, upload: UploadType | None = None, **keywords: Any):
            super().__init__(id, options=options, **keywords)
            self.upload = upload

        def as_dict(self) -> dict[str, Any]:
            return {**super().as_dict(), **({self.upload.value: True} if self.upload is not None else {})}

    class Output(Output):
        def __init__(self, id: str | None = None, display_name: str | None = None, options: list[str] | None = None,
                     tooltip: str | None = None, is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.io_type = options if options is not None else []


Image = Custom("IMAGE")
Mask = Custom("MASK")
Latent = Custom("LATENT")
Conditioning = Custom("CONDITIONING")
Sampler = Custom("SAMPLER")
Sigmas = Custom("SIGMAS")
Noise = Custom("NOISE")
Guider = Custom("GUIDER")
Clip = Custom("CLIP")
ControlNet = Custom("CONTROL_NET")
Vae = Custom("VAE")
Model = Custom("MODEL")
ClipVision = Custom("CLIP_VISION")
ClipVisionOutput = Custom("CLIP_VISION_OUTPUT")
UpscaleModel = Custom("UPSCALE_MODEL")
Audio = Custom("AUDIO")
Video = Custom("VIDEO")
LoraModel = Custom("LORA_MODEL")
Hooks = Custom("HOOKS")


@dataclass
class Schema:
    """A node's definition (same fields and defaults as ComfyUI's)."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    hidden: list[Hidden] | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def finalize(self) -> None:
        """Add the hidden inputs API and output nodes get, and ids for outputs without one."""
        wanted = ([Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org] if self.is_api_node else []) + \
                 ([Hidden.prompt, Hidden.extra_pnginfo] if self.is_output_node else [])
        if wanted:
            self.hidden = list(self.hidden or [])
            self.hidden += [item for item in wanted if item not in self.hidden]
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def validate(self) -> None:
        """Input ids and output ids must be unique, also across the two lists (ComfyUI refuses the node)."""
        input_ids = [item.id for item in self.inputs or []]
        output_ids = [item.id for item in self.outputs or []]
        problems = [f"{kind} ids {[i for i, n in Counter(ids).items() if n > 1]} are not unique"
                    for kind, ids in (("input", input_ids), ("output", output_ids)) if len(set(ids)) != len(ids)]
        if set(input_ids) & set(output_ids):
            problems.append(f"ids {sorted(set(input_ids) & set(output_ids))} are both inputs and outputs")
        if problems:
            raise ValueError(f"{self.node_id}: " + "; ".join(problems))

    def v1_info(self) -> dict[str, Any]:
        """The node's ``/object_info`` entry, without ``python_module`` (the loader sets that, not the node)."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for item in self.inputs or []:
            sections.setdefault("optional" if item.optional else "required", {})[item.id] = [item.get_io_type(),
                                                                                            item.as_dict()]
        for hidden in self.hidden or []:
            sections.setdefault("hidden", {})[hidden.name] = [hidden.value]
        outputs = self.outputs or []
        return {
            "input": sections,
            "input_order": {section: list(entries) for section, entries in sections.items()},
            "output": [output.io_type for output in outputs],
            "output_is_list": [output.is_output_list for output in outputs],
            "output_name": [output.display_name or output.io_type for output in outputs],
            "output_tooltips": [output.tooltip or None for output in outputs],
            "name": self.node_id,
            "display_name": self.display_name,
            "description": self.description,
            "category": self.category,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "api_node": self.is_api_node,
        }


class NodeOutput:
    """What ``execute`` returns (only used when a node runs, never by the stand-in)."""

    def __init__(self, *outputs: Any, **extras: Any):
        self.outputs, self.extras = outputs, extras


class ComfyNode:
    """Base class of V3 nodes."""

    hidden: Any = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - ComfyUI's name
        """The finalized, validated schema (what ComfyUI registers the node with and serves)."""
        for method in ("define_schema", "execute"):
            if getattr(cls, method).__func__ is getattr(ComfyNode, method).__func__:
                raise TypeError(f"No {method} function was defined for node class {cls.__name__}.")
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return cls.GET_SCHEMA().v1_info()


def __getattr__(name: str) -> Any:
    raise AttributeError(f"comfy_api.latest.io.{name} is not modelled by the ComfyUI stand-in: add it to "
                         "tests/comfy_stub/v3_io.py as ComfyUI 0.3.64 defines it (comfy_api/latest/_io.py)")
