"""MOVA Text Encode and MOVA Prompt Rewriter."""

from __future__ import annotations

from typing import Any

import comfy.model_management as mm
from comfy_api.latest import io, ui

from .comfy_io import CATEGORY, MovaModelType, number_input
from .comfy_model import MovaModel
from .conditioning import conditioning_from_embeddings
from .prompt_rewriter import (DEFAULT_BASE_URL, DEFAULT_KEY_ENV, DEFAULT_MODEL, MODES, AnswerCache, ChatClient,
                              Endpoint, endpoint_problem, key_env_problem, rewrite, rewrite_fingerprint)
from .widgets import REWRITER, choice_problem

_ANSWERS = AnswerCache()


class MOVATextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVATextEncode", display_name="MOVA Text Encode", category=CATEGORY,
            description="Encodes a prompt with the model's umT5 exactly as the official pipeline does "
                        "(512 tokens, padding zeroed). Native CLIPLoader(type='wan') + CLIPTextEncode also work "
                        "(and are needed for a file packed without the text encoder).",
            inputs=[MovaModelType.Input("mova_model"),
                    io.String.Input("text", multiline=True, dynamic_prompts=True, default="")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, mova_model: MovaModel, text: str) -> io.NodeOutput:
        return io.NodeOutput(conditioning_from_embeddings(mova_model.text_encoder().encode(text)))


class MOVAPromptRewriter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MOVAPromptRewriter", display_name="MOVA Prompt Rewriter", category=CATEGORY,
            description="The official MOVA prompt workflow: a vision model describes the first frame, a language model "
                        "rewrites your idea into an audio-video description that opens on it. Works with any "
                        "OpenAI-compatible endpoint; the API key is read from the environment variable you name.",
            inputs=[
                io.String.Input("prompt", multiline=True, default=""),
                io.Combo.Input("mode", options=list(MODES), default="rewrite",
                               tooltip="passthrough returns the prompt unchanged without any network access."),
                io.String.Input("base_url", default=DEFAULT_BASE_URL,
                                tooltip="OpenAI-compatible API root, e.g. http://127.0.0.1:11434/v1 for Ollama."),
                io.String.Input("vision_model", default=DEFAULT_MODEL, tooltip="Model that describes the first frame."),
                io.String.Input("llm_model", default=DEFAULT_MODEL, tooltip="Model that rewrites the prompt."),
                io.String.Input("api_key_env", default=DEFAULT_KEY_ENV,
                                tooltip="NAME of the environment variable holding the API key (never the key itself); "
                                        "empty for endpoints without a key."),
                number_input(REWRITER["timeout_s"]),
                number_input(REWRITER["retries"]),
                io.Boolean.Input("use_cache", default=True,
                                 tooltip="Reuse answers for the same prompt, image, endpoint and models."),
                io.Image.Input("image", optional=True, tooltip="First frame to describe; none = text only."),
            ],
            outputs=[io.String.Output(display_name="prompt"), io.String.Output(display_name="frame_description")],
        )

    @classmethod
    def validate_inputs(cls, mode: str, base_url: str, api_key_env: str) -> bool | str:
        problem = choice_problem("mode", mode, MODES)
        if problem is None and mode == "rewrite":
            problem = endpoint_problem(base_url, api_key_env)
        return problem or key_env_problem(api_key_env, mode=mode) or True

    @classmethod
    def fingerprint_inputs(cls, mode: str | None = None, use_cache: bool | None = None, prompt: str | None = None,
                           base_url: str | None = None, vision_model: str | None = None, llm_model: str | None = None,
                           **_other_inputs: Any) -> float | str:
        """ComfyUI passes every input (linked ones as None); see :func:`rewrite_fingerprint`."""
        return rewrite_fingerprint(mode, use_cache, prompt, base_url, vision_model, llm_model)

    @classmethod
    def execute(cls, prompt: str, mode: str, base_url: str, vision_model: str, llm_model: str, api_key_env: str,
                timeout_s: int, retries: int, use_cache: bool, image=None) -> io.NodeOutput:
        endpoint = Endpoint(base_url, api_key_env, timeout_s, retries)
        result = rewrite(prompt, image, mode=mode, endpoint=endpoint, vision_model=vision_model, llm_model=llm_model,
                         cache=_ANSWERS if use_cache else AnswerCache(),
                         client=ChatClient(endpoint, check_cancelled=mm.throw_exception_if_processing_interrupted))
        return io.NodeOutput(result.prompt, result.frame_description, ui=ui.PreviewText(result.prompt))
