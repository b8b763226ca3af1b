"""Bad input and faults, as careless and unlucky users make them: each case asserts the error names the input (or
file) and the fix, and that nothing was lost or left behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_mova_av.nodes.model_folders import resolve_model
from mova_core import cli
from mova_core.conditioning import to_image_tensor
from mova_core.config import ConfigError
from mova_core.loading import CheckpointError
from mova_core.media import sync_problem, write_mp4
from mova_core.lora import LoraError, load_lora
from mova_core.pack import pack_checkpoint
from mova_core.pipeline import MovaPipeline
from mova_core.tiny import cached_tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, hidden ones included (what a stopped or failed write could leave)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of the tiny MOVA folder to damage."""
    return Path(shutil.copytree(cached_tiny_checkpoint(), tmp_path / "MOVA-tiny"))


def cut(relative: str, keep: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A damage: replace the bytes of ``relative`` by ``keep(bytes)``; returns the damaged file."""
    def damage(root: Path) -> Path:
        file = root / relative
        file.write_bytes(keep(file.read_bytes()))
        return file
    return damage


def missing(relative: str) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        shutil.rmtree(root / relative) if (root / relative).is_dir() else (root / relative).unlink()
        return root / relative
    return damage


DIT = "video_dit/diffusion_pytorch_model.safetensors"
SHARD_INDEX = "audio_dit/diffusion_pytorch_model.safetensors.index.json"


def shard_index(text: str) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        (root / SHARD_INDEX).write_text(text, encoding="utf-8")
        return root / SHARD_INDEX
    return damage


@pytest.mark.parametrize("damage, error, fix", [
    (cut(DIT, lambda data: data[: len(data) // 2]), CheckpointError, "truncated or damaged. Download it again"),
    (cut(DIT, lambda data: b""), CheckpointError, "truncated or damaged. Download it again"),
    (cut("video_vae/diffusion_pytorch_model.safetensors", lambda data: b"garbage" * 99), CheckpointError,
     "truncated or damaged. Download it again"),
    (cut("audio_dit/config.json", lambda data: data[:20]), ConfigError, "is not valid JSON"),
    (cut("model_index.json", lambda data: b"{bad"), ConfigError, "is not valid JSON"),
    (cut("scheduler/scheduler_config.json", lambda data: b"[1, 2]"), ConfigError, "not an object"),
    (shard_index("{oops"), ConfigError, "is not valid JSON"),
    (shard_index('{"metadata": {}}'), CheckpointError, 'has no "weight_map"'),
    (missing("audio_dit/config.json"), ConfigError, "is missing; download the complete MOVA folder"),
    (missing("video_dit_2"), CheckpointError, "is missing: no such component folder"),
    (cut("tokenizer/tokenizer.json", lambda data: data[: len(data) // 3]), ConfigError,
     "not a readable tokenizer.json"),
])
def test_a_damaged_model_folder_names_the_file_and_the_fix(model_copy, damage, error, fix):
    damaged = damage(model_copy)
    with pytest.raises(error) as caught:
        MovaPipeline.from_pretrained(model_copy, dtype=torch.float32)
    message = str(caught.value)
    assert str(damaged) in message and fix in message
    assert "config=" not in message  # no API argument suggested for a damaged download


@pytest.mark.parametrize("keep", [lambda data: data[: len(data) // 2], lambda data: data[:4], lambda data: b"\0" * 64])
def test_a_damaged_packed_file_names_the_file_and_the_fix(model_copy, tmp_path, keep):
    packed = pack_checkpoint(model_copy, tmp_path / "tiny.safetensors")
    packed.write_bytes(keep(packed.read_bytes()))
    with pytest.raises(CheckpointError) as caught:
        MovaPipeline.from_pretrained(packed, dtype=torch.float32)
    assert str(packed) in str(caught.value) and "again" in str(caught.value)


@pytest.mark.parametrize("name, content", [("style.safetensors", b""), ("style.safetensors", b"\x10" * 40),
                                           ("style.pt", b""), ("style.ckpt", b"garbage")])
def test_a_damaged_lora_names_the_file(tmp_path, name, content):
    file = tmp_path / name
    file.write_bytes(content)
    with pytest.raises(LoraError, match=str(file)):
        load_lora(file)


def test_a_pickled_lora_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pickle-ran"
    file = tmp_path / "evil.pt"
    torch.save({"payload": _RunsOnLoad(str(marker))}, file)
    with pytest.raises(LoraError, match=r"evil\.pt: refused to load.*weights_only=True"):
        load_lora(file)
    assert not marker.exists()


class _RunsOnLoad:
    """An object whose unpickling would create a file (what a malicious checkpoint does)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ---------------------------------------------------------------------------------------------------------------
# Stops: SIGTERM / SIGHUP in the middle of a write leave no partial file (SIGINT already unwinds as KeyboardInterrupt)

WRITE_SLOWLY = """
    import sys, time
    from pathlib import Path
    from mova_core.media.files import write_atomically

    def slow(temp):
        with open(temp, "wb") as file:
            for index in range(400):
                file.write(b"x" * 4096)
                file.flush()
                if index == 2:
                    print("writing", flush=True)
                time.sleep(0.05)

    write_atomically(Path(sys.argv[1]) / "clip.mp4", slow)
"""

PACK_SLOWLY = """
    import sys, time
    from mova_core.pack import pack_checkpoint

    def progress(done, total):
        print("writing", flush=True)
        time.sleep(0.5)

    pack_checkpoint(sys.argv[2], sys.argv[1] + "/packed.safetensors", progress=progress)
"""

MUX_SLOWLY = """
    import sys, time
    import numpy as np
    import mova_core.media.mp4 as mp4

    encode = mp4.rgb24_frame
    def slow_frame(frame, index, *args):
        print("writing", flush=True)
        time.sleep(0.3)
        return encode(frame, index, *args)

    mp4.rgb24_frame = slow_frame
    mp4.write_mp4(sys.argv[1] + "/clip.mp4", np.zeros((40, 16, 16, 3), np.float32), None, fps=24)
"""


def stop_mid_write(script: str, folder: Path, signum: int, *extra: str,
                   preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` writing into ``folder``; send ``signum`` once it says it is writing."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(folder), *extra], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    assert child.stdout.readline() == "writing\n", child.communicate()
    assert [name for name in os.listdir(folder) if name.endswith(".part")], "no temporary file while writing"
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


STOPS = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", STOPS, ids=lambda signum: signal.Signals(signum).name)
@pytest.mark.parametrize("script", [WRITE_SLOWLY, PACK_SLOWLY, MUX_SLOWLY], ids=["write", "pack", "mp4"])
def test_a_stop_signal_mid_write_leaves_nothing_and_ends_with_the_signal(tmp_path, script, signum):
    out = tmp_path / "out"
    out.mkdir()
    stopped = stop_mid_write(script, out, signum, str(cached_tiny_checkpoint()))
    assert stopped.returncode == -signum, stopped.stderr  # the conventional status (shell: 128 + signal)
    assert files_under(out) == []


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_an_ignored_hangup_stays_ignored(tmp_path):
    """Under nohup (SIGHUP ignored) a hang-up must not abort the write."""
    finished = stop_mid_write(WRITE_SLOWLY, tmp_path, signal.SIGHUP,
                              preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert finished.returncode == 0, finished.stderr
    assert files_under(tmp_path) == ["clip.mp4"]


def test_handlers_are_back_after_a_write(tmp_path):
    from mova_core.media import write_atomically

    before = {signum: signal.getsignal(signum) for signum in STOPS}
    write_atomically(tmp_path / "a.bin", lambda temp: temp.write_bytes(b"1"))
    with pytest.raises(OSError):
        write_atomically(tmp_path / "b.bin", lambda temp: (_ for _ in ()).throw(OSError("disk on fire")))
    assert {signum: signal.getsignal(signum) for signum in STOPS} == before
    assert files_under(tmp_path) == ["a.bin"]


# ---------------------------------------------------------------------------------------------------------------
# Command line: refused before the model loads, one line, exit status 2; outputs never lost

@pytest.fixture
def loads(monkeypatch) -> list[Path]:
    """Records every model load of the CLI (the refused cases must not reach it)."""
    loaded: list[Path] = []
    original = MovaPipeline.from_pretrained.__func__

    def record(cls, path, *args, **kwargs):
        loaded.append(Path(path))
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(MovaPipeline, "from_pretrained", classmethod(record))
    return loaded


def demo(*arguments: str) -> int:
    return cli.main(["demo", "--steps", "1", "--frames", "5", *arguments])


@pytest.mark.parametrize("out, message", [
    ("clip.wav", "the clip is an MP4 .*ending in .mp4"),
    ("clip", "the clip is an MP4"),
    ("a-file/clip.mp4", "a-file is a file, not a folder"),
])
def test_cli_refuses_an_output_it_cannot_write_before_loading(tmp_path, monkeypatch, capsys, loads, out, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("keep me")
    assert demo("--out", out) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --out {out}: ") and error.count("\n") == 1
    assert re.search(message, error) and loads == []
    assert files_under(tmp_path) == ["a-file"] and (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("lufs", ["nan", "inf", "5", "-90"])
def test_cli_refuses_a_bad_loudness_target_before_loading(tmp_path, capsys, loads, lufs):
    assert demo("--loudness", lufs, "--out", str(tmp_path / "clip.mp4")) == 2
    assert "error: --loudness" in capsys.readouterr().err and loads == [] and files_under(tmp_path) == []


def test_cli_writes_into_a_folder_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    assert demo("--out", "existing") == 0 and demo("--out", "new/") == 0
    first = (tmp_path / "existing" / "clip.mp4").read_bytes()
    assert demo("--out", "existing/clip.mp4", "--seed", "1") == 0
    assert files_under(tmp_path) == ["existing/clip.mp4", "existing/clip_00001.mp4", "new/clip.mp4"]
    assert (tmp_path / "existing" / "clip.mp4").read_bytes() == first


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    arguments = ["generate", "--model", str(folder), "--prompt", "x", "--out", str(tmp_path / "c.mp4")]
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert error == f"error: {folder} is not a MOVA folder: model_index.json is missing. Give the folder that holds " \
                    "model_index.json, video_dit/, audio_dit/, ..., or a packed MOVA .safetensors file.\n"
    with pytest.raises(FileNotFoundError):
        cli.main([*arguments, "--debug"])


def test_cli_pack_of_a_file_says_pack_takes_a_folder(tmp_path, capsys):
    packed = tmp_path / "model.safetensors"
    packed.write_bytes(b"\0" * 16)
    assert cli.main(["pack", "--model", str(packed), "--out", str(tmp_path / "out.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "pack takes the downloaded folder" in error and "needs no packing" in error
    assert files_under(tmp_path) == ["model.safetensors"]


@pytest.mark.parametrize("option", ["--image", "--last-image"])
def test_cli_refuses_an_unreadable_image_before_loading(tmp_path, capsys, loads, option):
    (tmp_path / "frame.png").write_bytes(b"not a png")
    arguments = ["generate", "--model", str(cached_tiny_checkpoint()), "--prompt", "x", "--out", str(tmp_path / "c.mp4"),
                 option, str(tmp_path / "frame.png")]
    assert cli.main(arguments) == 2
    assert f"error: {option} {tmp_path / 'frame.png'}: not a readable image" in capsys.readouterr().err and loads == []


@pytest.mark.parametrize("prompt", ["", "🎵 Ein Lied, 一首歌, أغنية", "the sea " * 3000])
def test_unicode_empty_and_very_long_prompts_make_a_clip(tmp_path, prompt):
    assert demo("--prompt", prompt, "--out", str(tmp_path / "clip.mp4")) == 0
    assert files_under(tmp_path) == ["clip.mp4"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_a_full_disk_leaves_nothing_behind(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes every write past 20 kB fail as a full disk would, without root."""
    def small_disk() -> None:
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    cached_tiny_checkpoint()  # built here, not under the limit
    finished = subprocess.run([sys.executable, "-m", "mova_core", "demo", "--steps", "1", "--frames", "9", "--out",
                               str(tmp_path / "clip.mp4")], cwd=REPO_ROOT, capture_output=True, text=True,
                              preexec_fn=small_disk, timeout=300)
    assert finished.returncode == 2 and finished.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "File too large" in finished.stderr and files_under(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# Media and images

def test_sixteen_bit_grey_png_keeps_its_greys(tmp_path):
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    pixels = to_image_tensor(Image.open(tmp_path / "grey16.png")).float()
    assert pixels.shape == (48, 64, 3) and pixels[0, 0].tolist() == [0, 0, 0] and pixels[-1, -1].tolist() == [255] * 3
    assert abs(pixels.mean().item() - 127.5) < 1.0  # not the white frame PIL's own conversion makes


def test_surround_audio_is_refused_with_a_downmix_hint(tmp_path):
    with pytest.raises(ValueError) as caught:
        write_mp4(tmp_path / "clip.mp4", np.zeros((5, 16, 16, 3), np.float32), np.zeros((6, 10_000), np.float32),
                  fps=24, sample_rate=48_000)
    assert "6 channels, e.g. 5.1 surround: downmix it to stereo" in str(caught.value)
    assert "transposing" not in str(caught.value) and files_under(tmp_path) == []


@pytest.mark.parametrize("fps, frames, seconds, fits", [(24, 193, 193 / 24, True), (24, 193, 193 / 24 + 0.03, True),
                                                        (16, 193, 193 / 24, False), (24, 97, 193 / 24, False)])
def test_audio_and_frames_must_agree_with_the_fps(fps, frames, seconds, fits):
    problem = sync_problem(frames, round(seconds * 48_000), 48_000, fps)
    assert (problem is None) == fits
    if not fits:
        assert problem.startswith(f"fps={fps} does not fit the clip") and f"{frames * 48_000 / round(seconds * 48_000):.4g}" in problem


@pytest.fixture
def output_nodes():
    """nodes/output_nodes.py and MOVA AV Mux under the ComfyUI stand-in."""
    from comfy_stub import loaded_pack

    with loaded_pack() as pack:
        yield pack.module("nodes.output_nodes"), pack.nodes["MOVAAVMux"]


@pytest.mark.parametrize("prefix", ["", "  ", "MOVA/", ".hidden", "MOVA/.x"])
def test_mux_refuses_a_prefix_without_a_visible_name(output_nodes, prefix):
    _, mux = output_nodes
    assert "gives no visible file name" in mux.validate_inputs(filename_prefix=prefix)
    with pytest.raises(ValueError, match="gives no visible file name"):
        mux.execute(torch.zeros(5, 16, 16, 3), 24.0, prefix, 19)
    assert mux.validate_inputs(filename_prefix="MOVA/mova") is True


def test_mux_refuses_an_fps_that_does_not_fit_the_audio(output_nodes):
    _, mux = output_nodes
    audio = {"waveform": torch.zeros(1, 2, round(25 / 24 * 48_000)), "sample_rate": 48_000}
    with pytest.raises(ValueError, match=r"fps=16 does not fit the clip: 25 frames .* Set fps to 24"):
        mux.execute(torch.zeros(25, 16, 16, 3), 16.0, "MOVA/mova", 19, audio=audio)


def test_mux_honours_disable_metadata(output_nodes):
    module, _ = output_nodes
    workflow = {"workflow": {"nodes": []}}
    assert set(module._workflow_metadata({"1": {}}, workflow)) == {"prompt", "workflow"}
    sys.modules["comfy.cli_args"].args.disable_metadata = True  # what ComfyUI's --disable-metadata sets
    assert module.metadata_disabled() and module._workflow_metadata({"1": {}}, workflow) == {}


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/../../b"])
def test_model_names_cannot_leave_the_model_folders(tmp_path, name):
    with pytest.raises(FileNotFoundError, match="relative to models/mova"):
        resolve_model([tmp_path], name)


@pytest.mark.parametrize("option, value, message", [
    ("--text-cfg", "nan", r"--text-cfg=nan must be a finite number"),
    ("--fps", "1e6", r"--fps=1e\+06 is outside .*nearest valid value"),
    ("--steps", "0", r"--steps=0 is outside .*nearest valid value: 1"),
    ("--seed", str(2**70), rf"--seed={2**70} is outside 0 .. {2**64 - 1}; nearest valid value: {2**64 - 1}\."),
])
def test_cli_refuses_settings_out_of_range_before_loading(tmp_path, capsys, loads, option, value, message):
    assert demo(option, value, "--out", str(tmp_path / "clip.mp4")) == 2
    assert re.match(f"error: {message}", capsys.readouterr().err) and loads == [] and files_under(tmp_path) == []


def test_cli_names_the_option_when_the_model_refuses_the_size(tmp_path, capsys):
    assert cli.main(["demo", "--frames", "6", "--out", str(tmp_path / "clip.mp4")]) == 2
    assert capsys.readouterr().err == "error: --frames=6 must be 4k+1 (1, 5, 9, ...); nearest valid value: 5.\n"
    assert files_under(tmp_path) == []


def test_a_killed_writers_leftover_is_removed_by_a_later_write_and_a_live_ones_is_not(tmp_path):
    """SIGKILL, or SIGTERM while a ComfyUI worker thread writes, leaves a .part file no handler could remove;
    the next write into that folder removes it once its process is gone and it is old, never a live writer's."""
    from mova_core.media.files import ORPHAN_AGE_S, write_atomically

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".clip.mp4.{int(dead.stdout)}-0123abcd.part"
    live = tmp_path / f".clip.mp4.{os.getpid()}-89abcdef.part"
    fresh = tmp_path / f".other.mp4.{int(dead.stdout)}-fedcba98.part"
    for leftover in (orphan, live, fresh):
        leftover.write_bytes(b"half a clip")
    old = time.time() - ORPHAN_AGE_S - 60
    for leftover in (orphan, live):
        os.utime(leftover, (old, old))
    write_atomically(tmp_path / "next.mp4", lambda temp: temp.write_bytes(b"done"))
    assert not orphan.exists(), "the killed writer's old leftover is gone"
    assert live.exists() and fresh.exists(), "a running writer's file and a recent one are kept"
    assert files_under(tmp_path) == sorted(["next.mp4", live.name, fresh.name])
