"""MOVA's two-step prompt rewrite through any OpenAI-compatible chat endpoint (no ComfyUI import).

The official MOVA workflow first has a vision model describe the first frame, then has a language
model rewrite the user's idea into one audio-video description that opens on that frame and ends
with an audio paragraph. This module does the same over plain HTTP (``POST {base_url}/chat/completions``),
with a timeout, retries for transient failures, an in-memory cache, and errors that say what to fix.
The API key is read from an environment variable at call time; it is never stored, logged or shown (any
text from the server is redacted before it reaches an error). Waits on the network are sliced so an
injected ``check_cancelled`` (ComfyUI's interrupt) stops them within a fraction of a second.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from PIL import Image

from ..mova_core.conditioning import to_image_tensor

MODES = ("rewrite", "passthrough")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
MAX_IMAGE_SIDE = 1024  # vision endpoints downscale anyway; keeps requests small
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
POLL_S = 0.2  # how often a network wait or a back-off looks at check_cancelled
REDACTED = "[redacted API key]"
T = TypeVar("T")

FRAME_INSTRUCTIONS = (
    "This image is the first frame of a video. Describe it in concise English prose, in this order: the visual "
    "style (photo, animation, painting; colours; lighting; mood only where it is visible), the camera (shot size, "
    "angle, composition, focus), the visible people, objects and setting with their positions, and every piece "
    "of readable text copied exactly, in its original language, without translating it. Describe only what is "
    "visible: do not guess or invent."
)

REWRITE_INSTRUCTIONS = """You write prompts for a model that generates a video and its soundtrack together from a first frame and a text.
Rewrite the user's idea into one description of at most 250 words:
- The first paragraph opens on the first frame: work its essential content (subjects, setting, lighting, framing, visible text) into sentences of action instead of a list, and never contradict it.
- Then describe what happens in time order, keeping the first frame's look. Mention camera moves or cuts only when the user asks for them.
- Quote speech exactly as the user wrote it, in double quotes and in its original language. Add no dialogue.
- End with one paragraph that starts with "The audio" and describes only the sounds, music and speech the user asked for, with their timing when given.
- Be concrete and observable: no abstract words, no words that suggest a still picture, no new story elements.
Answer with the description only."""

NO_FRAME = "(no first frame given: add no visual details beyond the user's idea)"


class RewriterError(RuntimeError):
    """The endpoint could not be used; the message says what to change."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call the chat API. ``api_key_env`` is the NAME of the variable holding the key."""

    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    timeout_s: float = 120.0
    retries: int = 2

    @property
    def url(self) -> str:
        return api_root(self.base_url) + "/chat/completions"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def api_root(base_url: str) -> str:
    """``base_url`` without surrounding blanks and trailing slashes (one spelling per endpoint)."""
    return base_url.strip().rstrip("/")


def key_env_problem(api_key_env: str, *, mode: str = "rewrite") -> str | None:
    """Why ``api_key_env`` cannot be the NAME of the key's variable, or None.

    Only an empty value or the name of a variable set in this process is accepted, so a pasted key is never
    taken for a name (and then saved with the workflow). The default name may be unset in passthrough mode,
    which reads no key. The value is never repeated: it may be a key.
    """
    if not api_key_env or api_key_env in os.environ:
        return None
    if mode == "passthrough" and api_key_env == DEFAULT_KEY_ENV:
        return None
    return ("api_key_env must be the NAME of an environment variable set in the ComfyUI process (e.g. "
            "OPENAI_API_KEY), never the key itself: workflows and outputs would store it. The value given names no "
            "set variable (it is not repeated here, in case it is a key). Set the variable before starting ComfyUI "
            "and enter its name, or leave api_key_env empty for endpoints without a key.")


def endpoint_problem(base_url: str, api_key_env: str) -> str | None:
    """Why these settings cannot work (checked before any request), or None."""
    if not re.match(r"^https?://[^/\s]+", base_url.strip()):
        return (f"base_url={base_url!r} must be an http(s) URL of an OpenAI-compatible API, "
                f"e.g. {DEFAULT_BASE_URL} or http://127.0.0.1:11434/v1 (Ollama).")
    return key_env_problem(api_key_env)


def _error_detail(body: bytes) -> str:
    """The server's error message from a JSON error body (or the start of the raw body)."""
    try:
        data = json.loads(body)
        message = data.get("error", data) if isinstance(data, dict) else data
        message = message.get("message", message) if isinstance(message, dict) else message
        return str(message)[:300]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def _never_cancelled() -> None:
    """The default ``check_cancelled``: nothing stops the wait early."""


class ChatClient:
    """Minimal ``/chat/completions`` client: JSON over urllib, retries with exponential back-off.

    ``check_cancelled()`` is called every :data:`POLL_S` seconds while a request or a back-off waits and
    stops it by raising (ComfyUI passes its interrupt check); the abandoned request ends on its own timeout.
    """

    def __init__(self, endpoint: Endpoint, *, backoff_s: float = 0.5,
                 check_cancelled: Callable[[], None] = _never_cancelled):
        self.endpoint = endpoint
        self.backoff_s = backoff_s
        self.check_cancelled = check_cancelled

    def complete(self, model: str, messages: list[dict[str, Any]]) -> str:
        """The text of the first choice; RewriterError (never showing the API key) when the endpoint cannot give one."""
        try:
            return self._complete(model, messages)
        except RewriterError as error:
            raise RewriterError(self.redact(str(error))) from None

    def redact(self, text: str) -> str:
        """``text`` with the API key's value replaced (servers may echo it, e.g. in a 401 body)."""
        key = self.endpoint.api_key()
        return text.replace(key, REDACTED) if key else text

    def _complete(self, model: str, messages: list[dict[str, Any]]) -> str:
        body = json.dumps({"model": model, "messages": messages}).encode("utf-8")
        attempts = self.endpoint.retries + 1
        for attempt in range(attempts):
            try:
                return self._answer(self._wait(lambda: self._post(body)), model)
            except _Transient as error:
                if attempt + 1 == attempts:
                    raise RewriterError(f"{error} (after {attempts} attempt{'s' * (attempts > 1)}). {error.fix}") from None
                self._pause(min(self.backoff_s * 2**attempt, 8.0))
        raise AssertionError("unreachable")

    def _wait(self, work: Callable[[], T]) -> T:
        """``work()`` run in a daemon thread, its result or exception handed back; cancellable while it runs."""
        outcome: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

        def run() -> None:
            try:
                outcome.put((True, work()))
            except BaseException as error:  # handed to the waiting thread
                outcome.put((False, error))

        threading.Thread(target=run, name="mova-rewriter-request", daemon=True).start()
        while True:
            self.check_cancelled()
            try:
                succeeded, value = outcome.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if succeeded:
                return value
            raise value

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices of at most :data:`POLL_S`, checking for cancellation."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_cancelled()
            time.sleep(min(left, POLL_S))
        self.check_cancelled()

    def _post(self, body: bytes) -> bytes:
        endpoint = self.endpoint
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = endpoint.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            self._raise_http(error.code, error.read())
        except (socket.timeout, TimeoutError):
            raise _Transient(f"the chat endpoint {endpoint.url} did not answer within {endpoint.timeout_s:g} s",
                             "Raise timeout_s, use a faster model, or set mode to passthrough.") from None
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise _Transient(f"the chat endpoint {endpoint.url} did not answer within {endpoint.timeout_s:g} s",
                                 "Raise timeout_s, use a faster model, or set mode to passthrough.") from None
            raise _Transient(f"cannot reach the chat endpoint {endpoint.url} ({reason})",
                             "Check base_url and that the server is running and reachable, "
                             "or set mode to passthrough.") from None
        raise AssertionError("unreachable")

    def _raise_http(self, status: int, body: bytes) -> None:
        url, detail = self.endpoint.url, _error_detail(body)
        if status in _RETRY_STATUS:
            raise _Transient(f"the chat endpoint {url} answered HTTP {status}: {detail}",
                             "The server is busy or failing; try again later or use another endpoint.")
        if status in (401, 403):
            env = self.endpoint.api_key_env
            state = "is set" if self.endpoint.api_key() else "is NOT set"
            raise RewriterError(f"the chat endpoint {url} refused the request (HTTP {status}: {detail}). Check the API "
                                f"key: the environment variable {env or '(none configured)'} {state} in the ComfyUI process.")
        if status == 404:
            raise RewriterError(f"the chat endpoint {url} answered HTTP 404 ({detail}). Check base_url (most servers "
                                "expect it to end in /v1) and the model names.")
        raise RewriterError(f"the chat endpoint {url} answered HTTP {status}: {detail}. Check the model names and "
                            "that the model accepts this request (images need a vision model).")

    def _answer(self, payload: bytes, model: str) -> str:
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RewriterError(f"the chat endpoint {self.endpoint.url} gave an answer that is not an OpenAI-style chat "
                                f"completion: {payload[:200]!r}. Check base_url.") from None
        if isinstance(content, list):  # content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        text = _THINKING.sub("", content or "").strip()
        if not text:
            raise RewriterError(f"model {model!r} returned an empty answer; try another model or prompt.")
        return text


class _Transient(Exception):
    """A failure worth retrying; ``fix`` is the advice once retries are used up."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


def png_bytes(image: Any, max_side: int = MAX_IMAGE_SIDE) -> bytes:
    """The first image of a ComfyUI IMAGE (or any image :func:`to_image_tensor` takes) as PNG bytes."""
    picture = Image.fromarray(to_image_tensor(image, name="image").numpy())
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_frame(client: ChatClient, model: str, png: bytes) -> str:
    """Step 1: the vision model's description of the first frame."""
    data_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return client.complete(model, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url}},
        {"type": "text", "text": FRAME_INSTRUCTIONS},
    ]}])


def rewrite_prompt(client: ChatClient, model: str, prompt: str, frame_description: str) -> str:
    """Step 2: the language model's audio-video description built on the frame description."""
    user = f"First frame:\n{frame_description or NO_FRAME}\n\nUser's idea:\n{prompt}"
    return client.complete(model, [{"role": "system", "content": REWRITE_INSTRUCTIONS},
                                   {"role": "user", "content": user}])


class AnswerCache:
    """Least-recently-used memory of endpoint answers, keyed by everything that shaped them."""

    def __init__(self, size: int = 256):
        self.size = size
        self._answers: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def key(*parts: str | bytes) -> str:
        digest = hashlib.sha256()
        for part in parts:
            data = part if isinstance(part, bytes) else part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.hexdigest()

    def get_or_compute(self, key: str, compute: Callable[[], str]) -> tuple[str, bool]:
        """``(answer, came_from_cache)``; failures are not cached."""
        if key in self._answers:
            self._answers.move_to_end(key)
            return self._answers[key], True
        answer = compute()
        self._answers[key] = answer
        if len(self._answers) > self.size:
            self._answers.popitem(last=False)
        return answer, False

    def clear(self) -> None:
        self._answers.clear()


def rewrite_fingerprint(mode: str | None, use_cache: bool | None, prompt: str | None, base_url: str | None,
                        vision_model: str | None, llm_model: str | None) -> str | float:
    """What ComfyUI compares to tell whether the rewriter must run again (its ``fingerprint_inputs``).

    The same digest as long as the answer would be the same: in passthrough mode that of the prompt; with
    the cache that of what keys the cached answers (endpoint, models, prompt; a linked input arrives as
    None and is covered by ComfyUI's signature of the node feeding it). Without the cache NaN, which never
    equals the previous value: every run asks the endpoint again.
    """
    if mode != "passthrough" and not use_cache:
        return float("nan")
    shaping = [prompt] if mode == "passthrough" else [prompt, api_root(base_url or ""), vision_model, llm_model]
    return AnswerCache.key(str(mode), *(json.dumps(value) for value in shaping))


@dataclass(frozen=True)
class RewriteResult:
    prompt: str
    frame_description: str
    cached: bool = False


def rewrite(prompt: str, image: Any | None, *, mode: str, endpoint: Endpoint, vision_model: str, llm_model: str,
            cache: AnswerCache | None = None, client: ChatClient | None = None) -> RewriteResult:
    """Run the two steps (the first only with an ``image``), or return ``prompt`` unchanged in passthrough mode."""
    if mode not in MODES:
        raise RewriterError(f"mode={mode!r} is not available; choose one of {list(MODES)}.")
    if mode == "passthrough":
        return RewriteResult(prompt, "")
    if not prompt.strip():
        raise RewriterError("prompt is empty: write the idea to rewrite, or set mode to passthrough.")
    problem = endpoint_problem(endpoint.base_url, endpoint.api_key_env) or next(
        (f"{name} is empty: name the model to call." for name, value in
         (("vision_model", vision_model), ("llm_model", llm_model)) if not value.strip()), None)
    if problem:
        raise RewriterError(problem)
    client = client or ChatClient(endpoint)
    cache = cache or AnswerCache()
    base = api_root(endpoint.base_url)
    description, cached_description = "", True
    if image is not None:
        png = png_bytes(image)
        description, cached_description = cache.get_or_compute(
            cache.key("frame", base, vision_model, png), lambda: describe_frame(client, vision_model, png))
    text, cached_text = cache.get_or_compute(
        cache.key("rewrite", base, llm_model, prompt, description),
        lambda: rewrite_prompt(client, llm_model, prompt, description))
    return RewriteResult(text, description, cached_description and cached_text)

