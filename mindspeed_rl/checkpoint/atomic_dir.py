"""Write a whole output directory or nothing.

Output is built in a hidden temporary sibling (same filesystem, so the final ``rename`` is atomic)
and moved into place only when everything succeeded. On any error -- a bad input found halfway,
Ctrl-C, a full disk -- the sibling is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def check_target(target: Path, force: bool) -> None:
    """Refuse a non-empty target without ``force`` (before any work is done)."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ValueError(f"{target}: directory is not empty; pass --force to replace its content")


@contextlib.contextmanager
def atomic_directory(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` when the block succeeds."""
    target = Path(target).absolute()
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / target.name)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)
