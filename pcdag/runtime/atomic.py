"""Atomic writes: write to a temporary name in the same directory, then rename over the target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory ``tmp`` to ``final``, replacing an older ``final`` if present."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(trash, final)  # the older version stays in place: nothing committed is lost
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
