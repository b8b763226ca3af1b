"""Output files that never clobber: free-name picking and write-then-publish."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]

# Errors meaning "this filesystem cannot hard-link", as opposed to real failures.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


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

    The temp file is removed whatever happens, so a failed write leaves nothing behind and never
    touches an existing file. With `overwrite=False` the result goes to `unique_path(path)` (hard-linked
    into place, so even a file created meanwhile by someone else is never replaced); with
    `overwrite=True` it atomically replaces `path`. Missing parent folders are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temp_beside(target)
    try:
        write(temp)
        if overwrite:
            os.replace(temp, target)
            return target
        return _publish_without_overwriting(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _create_temp_beside(target: Path) -> Path:
    """An empty, newly created hidden file in the target's folder (ordinary permissions)."""
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
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
