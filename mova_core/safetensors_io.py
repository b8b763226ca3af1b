"""Raw safetensors files: read a header or one tensor at a time, write tensors one at a time.

A safetensors file is 8 bytes of little-endian header length ``N``, ``N`` bytes of UTF-8 JSON
(``{"__metadata__": {str: str}, "<key>": {"dtype", "shape", "data_offsets": [begin, end]}}``, the
offsets contiguous from 0 into the byte buffer), then the byte buffer. The ``safetensors``
library writes only from a dict of tensors held in memory, and its memory-mapped reads keep every
page touched resident while the file is open; :class:`StoredTensor` reads one tensor with plain
file reads, and :func:`write_streamed` writes from a list of :class:`TensorEntry`, reading each
tensor just before writing it. Peak RAM is one tensor (two while it is converted to another
dtype), whatever the file sizes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .loading import CheckpointError

MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses to open files with a larger header
DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
DAMAGED = "the file is empty, truncated or of another kind; download it again, or pack the MOVA folder again"


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``); no tensor is read.

    Raises :class:`CheckpointError` naming the file when it is not a safetensors file.
    """
    return _header_and_data_start(Path(path))[0]


def _header_and_data_start(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little") if size >= 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path} is not a safetensors file (no valid header): {DAMAGED}.")
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a safetensors file (header is not JSON: {error}): {DAMAGED}.") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not a JSON object): {DAMAGED}.")
    return header, 8 + length


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file (``begin``/``end``: absolute byte offsets)."""

    file: Path
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    def read(self) -> torch.Tensor:
        """The tensor, read into fresh memory (nothing stays mapped once it is freed)."""
        data = bytearray(self.end - self.begin)
        with open(self.file, "rb") as file:
            file.seek(self.begin)
            if file.readinto(data) != len(data):
                raise CheckpointError(f"{self.file}: {self.key} is cut short: {DAMAGED}.")
        if not data:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.frombuffer(data, dtype=self.dtype).reshape(self.shape)


def stored_tensors(path: str | Path) -> list[StoredTensor]:
    """The tensors of a safetensors file in file order, without reading them."""
    path = Path(path)
    header, data_start = _header_and_data_start(path)
    tensors = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if entry.get("dtype") not in TORCH_DTYPES:
            raise CheckpointError(f"{path}: {key} has dtype {entry.get('dtype')!r}, which torch cannot hold.")
        begin, end = entry["data_offsets"]
        tensors.append(StoredTensor(path, key, TORCH_DTYPES[entry["dtype"]], tuple(entry["shape"]),
                                    data_start + begin, data_start + end))
    return sorted(tensors, key=lambda tensor: tensor.begin)


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: its key, stored dtype and shape, and how to read it (any dtype, converted on write)."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def encode_header(entries: Sequence[TensorEntry], metadata: Mapping[str, str]) -> bytes:
    """The header bytes for ``entries`` in order (padded with spaces to a multiple of 8, as safetensors does)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for entry in entries:
        if entry.key in header:
            raise CheckpointError(f"tensor key {entry.key!r} is given twice.")
        if entry.dtype not in DTYPE_NAMES:
            raise CheckpointError(f"{entry.key}: dtype {entry.dtype} cannot be stored in safetensors.")
        header[entry.key] = {"dtype": DTYPE_NAMES[entry.dtype], "shape": list(entry.shape),
                             "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    encoded = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    if len(encoded) > MAX_HEADER_BYTES:
        raise CheckpointError(f"the safetensors header would be {len(encoded):,} bytes; safetensors reads at most "
                              f"{MAX_HEADER_BYTES:,}. Store less metadata.")
    return encoded


def write_streamed(path: str | Path, entries: Sequence[TensorEntry], metadata: Mapping[str, str] | None = None, *,
                   on_tensor: Callable[[TensorEntry], None] | None = None) -> None:
    """Write ``entries`` (and string ``metadata``) as a safetensors file at ``path``, one tensor at a time.

    ``on_tensor(entry)`` is called after each tensor is written (for progress reports).
    """
    header = encode_header(entries, metadata or {})
    with open(path, "wb") as file:
        file.write(len(header).to_bytes(8, "little"))
        file.write(header)
        for entry in entries:
            tensor = entry.read().to(device="cpu", dtype=entry.dtype).contiguous()
            if tuple(tensor.shape) != entry.shape:
                raise CheckpointError(f"{entry.key}: read shape {tuple(tensor.shape)}, planned {entry.shape}.")
            file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
            del tensor
            if on_tensor is not None:
                on_tensor(entry)
