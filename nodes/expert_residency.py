"""Which video experts the native MODEL keeps on the device during a sampling run (no ComfyUI import).

Both experts live in one MODEL, so ComfyUI would load (or, with too little VRAM, partially load) both. The
rule: when the audio DiT, the Bridge and every expert the run's timesteps need fit in the free device memory,
all of them stay resident (no reloads); otherwise only the expert in use is listed for loading, and at the
switch the MODEL is unloaded and loaded again with the other expert (the shared networks move once more, the
inactive expert never takes VRAM). Without device memory limits (CPU) everything stays where it is.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping


def experts_needed(timesteps: Iterable[float], expert_at: Callable[[float], str]) -> list[str]:
    """The experts a run's model timesteps use, in the order they first appear."""
    needed: list[str] = []
    for timestep in timesteps:
        expert = expert_at(timestep)
        if expert not in needed:
            needed.append(expert)
    return needed


def resident_experts(needed: list[str], expert_bytes: Mapping[str, int], shared_bytes: int,
                     free_bytes: float | None) -> frozenset[str] | None:
    """The experts to list for loading: None (all) when ``free_bytes`` is None (no device limit) or when the shared
    networks and every needed expert fit; else only the first needed expert."""
    if free_bytes is None or shared_bytes + sum(expert_bytes[name] for name in needed) <= free_bytes:
        return None
    return frozenset(needed[:1])


def skipped_prefixes(resident: frozenset[str] | None, experts: Iterable[str], root: str = "diffusion_model.") -> tuple[str, ...]:
    """Module-name prefixes of the experts left out of loading (none when ``resident`` is None)."""
    return () if resident is None else tuple(f"{root}{name}." for name in experts if name not in resident)
