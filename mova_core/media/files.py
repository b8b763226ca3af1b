"""Output files that never clobber: free-name picking and write-then-publish, with nothing left behind when a
write fails or the process is stopped (Ctrl-C, SIGTERM, SIGHUP)."""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

PathLike = Union[str, os.PathLike]

# Errors meaning "this filesystem cannot hard-link", as opposed to real failures.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
# Stops that end a process without unwinding Python (unlike SIGINT's KeyboardInterrupt): `docker stop`, `timeout`,
# a closed terminal.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Stopped(BaseException):
    """A stop signal arrived while a file was written (BaseException, like KeyboardInterrupt: nothing catches it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


@contextmanager
def stops_unwind() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP unwind the stack like Ctrl-C, so ``finally`` clauses remove temporary
    files; afterwards the previous handlers are back and a stop that arrived is delivered to them again (by
    default the process then ends with the signal's usual status, 143 for SIGTERM). Signals that are ignored
    (``nohup``) stay ignored. Python sets handlers only in the main thread: elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    caught = [signum for signum, handler in previous.items() if handler is not signal.SIG_IGN]
    for signum in caught:
        signal.signal(signum, _raise_stopped)
    try:
        yield
    except _Stopped as stopped:
        _restore(previous)
        signal.raise_signal(stopped.signum)  # the previous handler's turn; by default the process ends here
        raise InterruptedError(f"stopped by {signal.Signals(stopped.signum).name}; the unfinished file was "
                               "removed") from None
    finally:
        _restore(previous)


def _restore(handlers: dict[int, object]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def unique_path(path: PathLike) -> Path:
    """`path` if nothing is there, else the first free `stem_00001.ext`, `stem_00002.ext`, ...

    A dangling symlink counts as taken.
    """
    path = Path(path)
    candidate, counter = path, 0
    while os.path.lexists(candidate):
        counter += 1
        candidate = path.with_name(f"{path.stem}_{counter:05d}{path.suffix}")
    return candidate


def write_atomically(path: PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Run `write(temp_path)` on a hidden temp file beside `path`, then publish it; return the final path.

    The temp file is removed whatever happens (SIGTERM and SIGHUP included, see :func:`stops_unwind`), so a
    failed or stopped write leaves nothing behind and never touches an existing file. With
    `overwrite=False` the result goes to `unique_path(path)` (hard-linked
    into place, so even a file created meanwhile by someone else is never replaced); with
    `overwrite=True` it atomically replaces `path`. Missing parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with stops_unwind():
        temp = _create_temp_beside(target)
        try:
            write(temp)
            if overwrite:
                os.replace(temp, target)
                return target
            return _publish_without_overwriting(temp, target)
        finally:
            temp.unlink(missing_ok=True)


def writable_folder_problem(folder: PathLike) -> str | None:
    """Why no file can be written into ``folder`` (missing folders count as creatable), or None.

    Probes the nearest existing folder by creating and removing a hidden file, so read-only mounts and
    permissions are caught before any long work starts.
    """
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        os.unlink(_create_temp_beside(existing / "write-probe"))
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror or error})"
    return None


ORPHAN_AGE_S = 600
"""A temporary file untouched this long whose writing process is gone is an orphan (removed by later writes)."""
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.part$")


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (a stop that no handler could catch, such as
    SIGKILL, or SIGTERM while a worker thread was writing): ``.name.<pid>-<hex>.part`` files of a process that no
    longer runs, untouched for :data:`ORPHAN_AGE_S` seconds. Returns what was removed."""
    removed = []
    now = time.time()
    for entry in folder.glob(".*.part"):
        match = _TEMP_NAME.match(entry.name)
        try:
            if match and not _writer_alive(int(match.group(1))) and now - entry.stat().st_mtime > ORPHAN_AGE_S:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


def _create_temp_beside(target: Path) -> Path:
    """An empty, newly created hidden file in the target's folder (ordinary permissions), named after this process
    so that a later write can tell an orphan (:func:`remove_orphans`) from a file being written."""
    remove_orphans(target.parent)
    while True:
        temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temp
        except FileExistsError:
            continue


def _publish_without_overwriting(temp: Path, target: Path) -> Path:
    while True:
        final = unique_path(target)
        try:
            os.link(temp, final)  # fails instead of replacing if `final` appeared meanwhile
            return final
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            os.replace(temp, final)  # no hard links here: free name checked just above
            return final
