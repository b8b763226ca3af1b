"""Process memory for the benchmarks (Linux ``/proc/<pid>/status``): peak RSS and peak anonymous RSS.

File-backed pages of memory-mapped weights count in RSS but are not memory the process holds (the kernel
drops them under pressure and reads them again), so the figure that matters for loading is the anonymous
part. The kernel keeps the RSS peak (``VmHWM``) but not the anonymous one, so :class:`AnonPeak` samples it.
"""

from __future__ import annotations

import threading
from pathlib import Path

def status_kib(field: str, pid: int | str = "self", file: str = "status") -> int:
    """A field of ``/proc/<pid>/<file>`` in KiB (``status``: ``VmHWM``, ``VmRSS``, ``RssAnon``, ``RssFile``;
    ``smaps_rollup``: ``Anonymous``); 0 if absent or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def gib(kib: int) -> float:
    return kib / 2**20


class AnonPeak:
    """Samples ``RssAnon`` of process ``pid`` (this one by default) every ``interval`` seconds in a thread while
    active (``with AnonPeak() as peak``); ``peak.kib`` is the highest value seen (sampled, so a peak shorter than
    the interval can be missed)."""

    def __init__(self, interval: float = 0.02, pid: int | str = "self"):
        self.interval, self.pid, self.kib = interval, pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.kib = max(self.kib, status_kib("RssAnon", self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "AnonPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
