"""MOVA Prompt Rewriter against a fake OpenAI-compatible server on 127.0.0.1 (no ComfyUI, no internet)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from comfyui_mova_av.nodes.prompt_rewriter import (DEFAULT_BASE_URL, DEFAULT_KEY_ENV, AnswerCache, ChatClient, Endpoint,
                                                   RewriterError, endpoint_problem, png_bytes, rewrite)

KEY_ENV = "MOVA_TEST_REWRITER_KEY"


def chat_answer(text: str) -> tuple[int, dict, float]:
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, 0.0


class FakeChatServer:
    """Answers POST /v1/chat/completions from a script of (status, json body, delay); records every request."""

    def __init__(self):
        self.script: list[tuple[int, dict, float]] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload, delay = server.script.pop(0) if server.script else chat_answer("default answer")
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeChatServer()
    yield fake
    fake.close()


def run(server: FakeChatServer, prompt: str = "a dog barks at the sea", image=None, *, cache=None, retries=0,
        timeout_s=5.0, api_key_env="", mode="rewrite"):
    endpoint = Endpoint(server.base_url, api_key_env, timeout_s, retries)
    return rewrite(prompt, image, mode=mode, endpoint=endpoint, vision_model="vl-model", llm_model="text-model",
                   cache=cache or AnswerCache(), client=ChatClient(endpoint, backoff_s=0.0))


def first_frame() -> torch.Tensor:
    image = torch.zeros(1, 40, 60, 3)
    image[..., 0] = 1.0  # red frame, ComfyUI IMAGE layout
    return image


def test_passthrough_needs_no_network():
    endpoint = Endpoint("http://127.0.0.1:9/v1", KEY_ENV, 0.1, 0)  # nothing listens there
    result = rewrite("keep me", first_frame(), mode="passthrough", endpoint=endpoint, vision_model="", llm_model="")
    assert (result.prompt, result.frame_description) == ("keep me", "")


def test_two_steps_describe_the_frame_then_rewrite_with_it(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "secret-value")
    server.script = [chat_answer("A red wall fills the frame."), chat_answer("<think>plan</think>\nThe dog barks.\n\nThe audio shows barking.")]
    result = run(server, image=first_frame(), api_key_env=KEY_ENV)
    assert result.frame_description == "A red wall fills the frame."
    assert result.prompt == "The dog barks.\n\nThe audio shows barking."  # reasoning block removed
    describe, rewrite_request = server.requests
    assert describe["path"] == rewrite_request["path"] == "/v1/chat/completions"
    assert describe["headers"]["Authorization"] == "Bearer secret-value"
    assert describe["body"]["model"] == "vl-model" and rewrite_request["body"]["model"] == "text-model"
    parts = describe["body"]["messages"][0]["content"]
    data_url = next(part["image_url"]["url"] for part in parts if part["type"] == "image_url")
    assert data_url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    assert sent.size == (60, 40) and sent.getpixel((0, 0)) == (255, 0, 0)
    system, user = rewrite_request["body"]["messages"]
    assert system["role"] == "system" and "The audio" in system["content"]
    assert "A red wall fills the frame." in user["content"] and "a dog barks at the sea" in user["content"]


def test_without_image_only_the_rewrite_step_runs(server):
    server.script = [chat_answer("Rewritten.")]
    result = run(server)
    assert (result.prompt, result.frame_description) == ("Rewritten.", "")
    assert len(server.requests) == 1 and "no first frame given" in server.requests[0]["body"]["messages"][1]["content"]
    assert "Authorization" not in server.requests[0]["headers"]  # no variable named: no key sent


def test_cache_reuses_answers_and_a_new_prompt_reuses_the_frame_description(server):
    cache = AnswerCache()
    server.script = [chat_answer("frame"), chat_answer("first rewrite"), chat_answer("second rewrite")]
    assert not run(server, "idea one", first_frame(), cache=cache).cached
    again = run(server, "idea one", first_frame(), cache=cache)
    assert again.cached and again.prompt == "first rewrite" and len(server.requests) == 2
    other = run(server, "idea two", first_frame(), cache=cache)
    assert other.prompt == "second rewrite" and not other.cached
    assert len(server.requests) == 3  # only the rewrite step ran again


def test_transient_failures_are_retried(server):
    server.script = [(503, {"error": {"message": "overloaded"}}, 0.0), (429, {"error": "slow down"}, 0.0),
                     chat_answer("made it")]
    assert run(server, retries=2).prompt == "made it"
    assert len(server.requests) == 3


def test_retries_used_up_give_the_server_message(server):
    server.script = [(503, {"error": {"message": "overloaded"}}, 0.0)] * 2
    with pytest.raises(RewriterError, match=r"HTTP 503: overloaded \(after 2 attempts\)"):
        run(server, retries=1)


def test_unreachable_endpoint_says_what_to_do():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", "", 2.0, 1)
    with pytest.raises(RewriterError) as caught:
        rewrite("idea", None, mode="rewrite", endpoint=endpoint, vision_model="v", llm_model="t",
                client=ChatClient(endpoint, backoff_s=0.0))
    message = str(caught.value)
    assert f"cannot reach the chat endpoint http://127.0.0.1:{port}/v1/chat/completions" in message
    assert "after 2 attempts" in message and "base_url" in message and "passthrough" in message


def test_slow_endpoint_times_out(server):
    server.script = [(200, {"choices": [{"message": {"content": "late"}}]}, 1.0)]
    with pytest.raises(RewriterError, match=r"did not answer within 0.3 s .*Raise timeout_s"):
        run(server, timeout_s=0.3)


def test_rejected_key_names_the_variable_and_never_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-very-secret")
    server.script = [(401, {"error": {"message": "invalid api key"}}, 0.0)]
    with pytest.raises(RewriterError) as caught:
        run(server, retries=3, api_key_env=KEY_ENV)
    message = str(caught.value)
    assert "HTTP 401: invalid api key" in message and f"{KEY_ENV} is set" in message
    assert "sk-very-secret" not in message
    assert len(server.requests) == 1  # a refused key is not retried


def test_unset_key_variable_is_refused_before_any_request_and_a_missing_key_is_pointed_out(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(RewriterError, match="names no set variable"):
        run(server, api_key_env=KEY_ENV)
    assert server.requests == []
    server.script = [(401, {"error": {"message": "missing key"}}, 0.0)]
    with pytest.raises(RewriterError, match=r"environment variable \(none configured\) is NOT set"):
        run(server)


def test_wrong_path_and_odd_answers(server):
    server.script = [(404, {"error": {"message": "model not found"}}, 0.0)]
    with pytest.raises(RewriterError, match="HTTP 404 .*Check base_url"):
        run(server)
    server.script = [(200, {"data": []}, 0.0)]
    with pytest.raises(RewriterError, match="not an OpenAI-style chat completion"):
        run(server)
    server.script = [chat_answer("   ")]
    with pytest.raises(RewriterError, match="'text-model' returned an empty answer"):
        run(server)


def test_failures_are_not_cached(server):
    cache = AnswerCache()
    server.script = [(500, {"error": "boom"}, 0.0), chat_answer("fine now")]
    with pytest.raises(RewriterError):
        run(server, cache=cache)
    assert run(server, cache=cache).prompt == "fine now"


@pytest.mark.parametrize("base_url, key_env, message", [
    ("api.openai.com/v1", "OPENAI_API_KEY", "base_url='api.openai.com/v1' must be an http"),
    ("https://api.openai.com/v1", "sk-proj-abc123", "NAME of an environment variable"),
    ("https://api.openai.com/v1", "MY KEY", "NAME of an environment variable"),
])
def test_settings_are_checked_before_any_request(base_url, key_env, message):
    assert message in endpoint_problem(base_url, key_env)
    with pytest.raises(RewriterError, match=message.split("'")[0]):
        rewrite("idea", None, mode="rewrite", endpoint=Endpoint(base_url, key_env), vision_model="v", llm_model="t")


def test_other_bad_inputs():
    assert endpoint_problem("http://127.0.0.1:11434/v1", "") is None  # local endpoint without a key
    endpoint = Endpoint("http://127.0.0.1:9/v1", "")
    with pytest.raises(RewriterError, match="mode='magic'"):
        rewrite("idea", None, mode="magic", endpoint=endpoint, vision_model="v", llm_model="t")
    with pytest.raises(RewriterError, match="prompt is empty"):
        rewrite("  ", None, mode="rewrite", endpoint=endpoint, vision_model="v", llm_model="t")
    with pytest.raises(RewriterError, match="llm_model is empty"):
        rewrite("idea", None, mode="rewrite", endpoint=endpoint, vision_model="v", llm_model=" ")


def test_large_frames_are_sent_downscaled():
    picture = Image.open(io.BytesIO(png_bytes(torch.rand(1, 1500, 3000, 3))))
    assert picture.size == (1024, 512)


@pytest.fixture
def rewriter_node():
    """The MOVA Prompt Rewriter class as ComfyUI registers it (stand-in ComfyUI) and its input names."""
    from comfy_stub import loaded_pack

    with loaded_pack() as pack:
        node = pack.nodes["MOVAPromptRewriter"]
        yield node, [item.id for item in node.GET_SCHEMA().inputs]


def all_inputs(names: list[str], **changes) -> dict:
    """Every input as ComfyUI 0.3.64 passes them to fingerprint_inputs: widgets by value, links as None."""
    values = {"prompt": "a dog barks", "mode": "rewrite", "base_url": "https://api.example.com/v1",
              "vision_model": "vl", "llm_model": "llm", "api_key_env": "", "timeout_s": 120, "retries": 2,
              "use_cache": True, "image": None}
    assert set(values) == set(names), "the test's inputs drifted from the node's schema"
    return {**values, **changes}


def test_fingerprint_takes_every_input_and_changes_only_with_the_answer(rewriter_node):
    node, names = rewriter_node
    fingerprint = lambda **changes: node.fingerprint_inputs(**all_inputs(names, **changes))  # noqa: E731
    first = fingerprint()
    assert isinstance(first, str) and fingerprint() == first  # a re-queue is a cache hit
    assert fingerprint(timeout_s=30, retries=0, base_url="https://api.example.com/v1/ ") == first
    for change in ({"prompt": "a cat"}, {"llm_model": "other"}, {"vision_model": "other"},
                   {"base_url": "http://127.0.0.1:11434/v1"}, {"prompt": None}):
        assert fingerprint(**change) != first, change
    no_cache = fingerprint(use_cache=False)
    assert no_cache != no_cache  # NaN: never equal to the last run's value, so the endpoint is asked again
    passthrough = fingerprint(mode="passthrough", use_cache=False)
    assert passthrough == fingerprint(mode="passthrough", llm_model="x", base_url="junk")
    assert passthrough != fingerprint(mode="passthrough", prompt="a cat")


class Cancelled(Exception):
    """Stands for ComfyUI's InterruptProcessingException."""


def cancel_after(seconds: float):
    """A check_cancelled that raises once ``seconds`` have passed (as ComfyUI's does after /interrupt)."""
    deadline = time.monotonic() + seconds

    def check() -> None:
        if time.monotonic() > deadline:
            raise Cancelled()

    return check


def test_cancel_stops_a_request_that_never_answers(server):
    server.script = [chat_answer("too late")[:2] + (5.0,)]
    endpoint = Endpoint(server.base_url, "", 60.0, 3)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        rewrite("idea", None, mode="rewrite", endpoint=endpoint, vision_model="v", llm_model="t",
                client=ChatClient(endpoint, check_cancelled=cancel_after(0.3)))
    assert time.monotonic() - started < 1.5 and len(server.requests) == 1


def test_cancel_stops_the_wait_between_retries(server):
    server.script = [(503, {"error": "busy"}, 0.0)] * 3
    endpoint = Endpoint(server.base_url, "", 5.0, 2)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        rewrite("idea", None, mode="rewrite", endpoint=endpoint, vision_model="v", llm_model="t",
                client=ChatClient(endpoint, backoff_s=10.0, check_cancelled=cancel_after(0.3)))
    assert time.monotonic() - started < 1.5 and len(server.requests) == 1


@pytest.mark.parametrize("pasted", ["gsk_" + "a1B2" * 12, "sk" + "Q9" * 24, "AIzaSyD" + "x" * 32, "abcdef0123456789" * 3])
def test_a_pasted_key_is_refused_in_every_mode_and_never_repeated(pasted, rewriter_node):
    node, names = rewriter_node
    for mode in ("rewrite", "passthrough"):
        problem = node.validate_inputs(mode=mode, base_url=DEFAULT_BASE_URL, api_key_env=pasted)
        assert isinstance(problem, str) and "NAME of an environment variable" in problem and pasted not in problem
    with pytest.raises(RewriterError) as caught:
        rewrite("idea", None, mode="rewrite", endpoint=Endpoint(DEFAULT_BASE_URL, pasted), vision_model="v",
                llm_model="t")
    assert pasted not in str(caught.value)


def test_set_variable_names_and_the_unset_default_in_passthrough_are_accepted(rewriter_node, monkeypatch):
    node, _ = rewriter_node
    monkeypatch.setenv(KEY_ENV, "value")
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)
    assert node.validate_inputs(mode="rewrite", base_url=DEFAULT_BASE_URL, api_key_env=KEY_ENV) is True
    assert node.validate_inputs(mode="rewrite", base_url=DEFAULT_BASE_URL, api_key_env="") is True
    assert node.validate_inputs(mode="passthrough", base_url="", api_key_env=DEFAULT_KEY_ENV) is True
    assert "names no set variable" in node.validate_inputs(mode="rewrite", base_url=DEFAULT_BASE_URL,
                                                           api_key_env=DEFAULT_KEY_ENV)


@pytest.mark.parametrize("status, body", [
    (401, {"error": {"message": "Incorrect API key provided: sk-live-1234567890abcdef"}}),
    (500, {"error": {"message": "upstream failed for key sk-live-1234567890abcdef"}}),
    (200, {"echo": "sk-live-1234567890abcdef"}),
])
def test_a_key_echoed_by_the_server_is_redacted(server, monkeypatch, status, body):
    monkeypatch.setenv(KEY_ENV, "sk-live-1234567890abcdef")
    server.script = [(status, body, 0.0)]
    with pytest.raises(RewriterError) as caught:
        run(server, api_key_env=KEY_ENV)
    assert "sk-live-1234567890abcdef" not in str(caught.value) and "[redacted API key]" in str(caught.value)
