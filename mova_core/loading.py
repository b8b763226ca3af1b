"""Stream official safetensors checkpoints into modules built on the meta device.

A component path is either a folder (``config.json`` plus one ``*.safetensors`` file or
shards listed in a ``*.safetensors.index.json``), a single ``.safetensors`` file, or a
:class:`PackedComponent` (one component's keys inside a packed single-file MOVA checkpoint, see
:mod:`mova_core.packed`). Tensors are read one at a time from memory-mapped files and cast
straight into the module, so peak RAM stays near one copy of the weights.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar, Union

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import DAMAGED_FILE_FIX, ConfigBase, ConfigError, read_json
from .ops import operations_for

M = TypeVar("M", bound=nn.Module)
C = TypeVar("C", bound=ConfigBase)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn)
FP8_DTYPES = (torch.float8_e4m3fn,)
_PREVIEW_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint that does not match the module it is loaded into."""


@dataclasses.dataclass(frozen=True)
class PackedComponent:
    """One component of a packed single-file MOVA checkpoint: the file's tensors under ``"<name>."``
    (read without the prefix) and the content of the component's ``config.json``."""

    file: Path
    name: str
    config: Mapping[str, Any] = dataclasses.field(compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return f"{self.name}."

    def __str__(self) -> str:
        return f"{self.file} (component {self.name})"


ComponentPath = Union[str, Path, PackedComponent]


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a component folder (shards in index order) or the file itself."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: expected a .safetensors file.")
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder or file.")
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise CheckpointError(f"{path}: several shard indexes {[i.name for i in indexes]}; keep one.")
    if indexes:
        weight_map = read_json(indexes[0]).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
            raise CheckpointError(f"{indexes[0]} has no \"weight_map\" of tensor names to shard files; "
                                  f"{DAMAGED_FILE_FIX}.")
        shards = list(dict.fromkeys(weight_map.values()))
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            raise CheckpointError(f"{indexes[0]}: shard files missing: {absent[:_PREVIEW_KEYS]}.")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        found = [f.name for f in files] or "none"
        raise CheckpointError(f"{path}: expected one .safetensors file or a *.safetensors.index.json, found {found}.")
    return files


def open_safetensors(file: Path) -> Any:
    """``safe_open(file)``; :class:`CheckpointError` naming the file and the fix when it is truncated or not safetensors."""
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except SafetensorError as error:
        raise CheckpointError(f"{file} cannot be read as safetensors ({error}): it is truncated or damaged. Download "
                              "it again, or pack the MOVA folder again if it is a packed file.") from None


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Read-only mapping over the tensors of safetensors files, loaded on access.

    With a ``prefix`` only the keys starting with it are seen, under their name without it.
    Use as a context manager; the files stay memory-mapped while it is open.
    """

    def __init__(self, files: list[Path], prefix: str = ""):
        self.files = files
        self.prefix = prefix
        self._stack = ExitStack()
        self._where: dict[str, object] = {}
        self._source: dict[str, Path] = {}

    def __enter__(self) -> "LazyStateDict":
        for file in self.files:
            handle = self._stack.enter_context(open_safetensors(file))
            for key in handle.keys():
                if key.startswith(self.prefix):
                    self._where[key[len(self.prefix):]] = handle
                    self._source[key[len(self.prefix):]] = file
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key].get_tensor(self.prefix + key)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._where[key].get_slice(self.prefix + key).get_shape())  # type: ignore[attr-defined]

    def source(self, key: str) -> Path:
        return self._source[key]


class KeyView(Mapping[str, torch.Tensor]):
    """Read-only view of a lazy checkpoint under the module's key names.

    ``sources`` maps each module key to the file keys it is read from: one key is a rename, several
    are combined by ``combine(*tensors)`` (for example legacy weight-norm pairs). The result has the
    shape of the last source. Nothing is read until a key is accessed.
    """

    def __init__(self, weights: LazyStateDict, sources: Mapping[str, tuple[str, ...]],
                 combine: Callable[..., torch.Tensor] | None = None):
        self.weights = weights
        self.sources = dict(sources)
        self.combine = combine

    def __getitem__(self, key: str) -> torch.Tensor:
        tensors = [self.weights[source] for source in self.sources[key]]
        return tensors[0] if len(tensors) == 1 else self.combine(*tensors)  # type: ignore[misc]

    def __contains__(self, key: object) -> bool:  # without reading the tensor
        return key in self.sources

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.weights.shape(self.sources[key][-1])


def _is_matmul_weight(module: nn.Module, name: str) -> bool:
    return name == "weight" and isinstance(module, nn.Linear)


def storage_dtype(module: nn.Module, name: str, dtype: torch.dtype, compute_dtype: torch.dtype) -> torch.dtype:
    """fp8 storage applies to Linear weights only; norms, biases and tables keep ``compute_dtype``."""
    if dtype in FP8_DTYPES and not _is_matmul_weight(module, name):
        return compute_dtype
    return dtype


def load_weights(
    module: nn.Module,
    weights: Mapping[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    shape_of: Callable[[str], tuple[int, ...]] | None = None,
) -> None:
    """Replace every parameter and persistent buffer of ``module`` with the checkpoint tensor.

    Keys must match exactly; shapes are checked before any data is read. ``dtype`` is the
    storage dtype (fp8 only for Linear weights, see :func:`storage_dtype`).
    """
    if dtype not in SUPPORTED_DTYPES:
        raise CheckpointError(f"dtype {dtype} is not supported; choose one of {SUPPORTED_DTYPES}.")
    compute_dtype = compute_dtype or (torch.bfloat16 if dtype in FP8_DTYPES else dtype)
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shape_of = shape_of or (lambda key: tuple(weights[key].shape))
    wrong_shape = [
        f"{k}: file {shape_of(k)} vs model {tuple(expected[k].shape)}"
        for k in expected if k in weights and shape_of(k) != tuple(expected[k].shape)
    ]
    problems = [
        f"{label} ({len(keys)}): {keys[:_PREVIEW_KEYS]}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped keys", wrong_shape))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    for key in expected:
        owner_path, _, name = key.rpartition(".")
        owner = module.get_submodule(owner_path)
        tensor = weights[key].to(device=device, dtype=storage_dtype(owner, name, dtype, compute_dtype))
        if name in owner._parameters:
            owner._parameters[name] = nn.Parameter(tensor, requires_grad=False)
        else:
            owner._buffers[name] = tensor


def open_weights(path: ComponentPath) -> LazyStateDict:
    """The lazy tensors of a component folder, a single weights file or a packed component."""
    if isinstance(path, PackedComponent):
        return LazyStateDict([path.file], prefix=path.prefix)
    return LazyStateDict(weight_files(path))


def component_file(path: str | Path, name: str) -> Path:
    """``name`` (for example ``config.json``) inside a component folder, or next to a single weights file."""
    path = Path(path)
    return (path if path.is_dir() else path.parent) / name


def component_config(path: ComponentPath, config: C | None, config_class: type[C]) -> C:
    """The explicit ``config``, else ``config_class`` read from the ``config.json`` of the component
    folder (or next to a single weights file, or carried by a packed component)."""
    if config is not None:
        return config
    if isinstance(path, PackedComponent):
        return config_class.from_dict(path.config, source=f"{path} config")
    if not Path(path).exists():
        raise CheckpointError(f"{path} is missing: no such component folder or weights file. Download the complete "
                              "MOVA folder (it holds one folder per component).")
    config_file = component_file(path, "config.json")
    if not Path(path).is_dir() and not config_file.is_file():  # a folder without one: read_json names it
        raise ConfigError(
            f"no {config_file} for {path}: pass config=... ({config_class.__name__}) explicitly, "
            "or give the component folder that holds config.json."
        )
    return config_class.from_file(config_file)


def load_network(
    network: Callable[..., M],
    config_class: type[C],
    path: ComponentPath,
    *,
    config: C | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: Any = None,
    convert: Callable[[LazyStateDict], Mapping[str, torch.Tensor]] | None = None,
    **network_kwargs: Any,
) -> M:
    """Build ``network(config, operations=..., **network_kwargs)`` for a component folder, a packed
    component (or a single weights file with ``config`` given) and stream its weights in. ``operations`` defaults to
    :func:`mova_core.ops.operations_for` ``(dtype)``."""
    config = component_config(path, config, config_class)
    ops = operations_for(dtype, operations)
    return load_component(lambda: network(config, operations=ops, **network_kwargs), path, dtype=dtype,
                          device=device, convert=convert)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Construct a module without allocating or initialising its weights."""
    with torch.device("meta"):
        return factory()


def load_component(
    factory: Callable[[], M],
    path: ComponentPath,
    *,
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    convert: Callable[[LazyStateDict], Mapping[str, torch.Tensor]] | None = None,
) -> M:
    """Build ``factory()`` on the meta device and stream the weights at ``path`` into it.

    ``convert`` maps the file's keys to the module's (for example fusing legacy weight-norm
    pairs); it receives the lazy mapping and may return any mapping (its ``shape(key)`` method, if
    it has one, is used to check shapes without reading tensors).
    """
    module = build_on_meta(factory)
    with open_weights(path) as lazy:
        weights: Mapping[str, torch.Tensor] = lazy if convert is None else convert(lazy)
        shape_of = getattr(weights, "shape", None)  # converted views may report shapes without reading
        load_weights(module, weights, source=str(path), dtype=dtype, compute_dtype=compute_dtype,
                     device=device, shape_of=shape_of)
    return module.eval().requires_grad_(False)
