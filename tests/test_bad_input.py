"""Bad input and faults, as careless and unlucky users make them: each case asserts the error names the input (or
file) and the fix, and that nothing was lost or left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import torch

from mova_core.config import ConfigError
from mova_core.loading import CheckpointError
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
