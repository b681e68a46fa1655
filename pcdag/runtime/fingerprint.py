"""A cache of input-file content digests, kept beside a store so an unchanged file is not read twice.

``DigestCache(path).digest(file)`` returns ``file_digest(file)`` (BLAKE2b of the bytes), read from the cache when
the file's size, modification time and inode are those recorded with the digest. A copied or touched file is
therefore re-hashed once and keeps its digest; an edited one gets a new digest. The one edit it misses: bytes
changed in place with the size kept and the modification time set back (the cache trusts size + mtime + inode).

The cache is ``<store>/.fingerprints.json``, written atomically; it holds the entries looked up by the last run
only, so it does not grow with files that are gone. A missing or damaged cache just means re-hashing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pcdag.atomic import atomic_write_json
from pcdag.graphs.node import file_digest

CACHE_FILE = ".fingerprints.json"
_FORMAT = 1


class DigestCache:
    """Content digests of files keyed by absolute path and checked against ``(size, mtime_ns, inode)``."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.old: dict[str, list] = self._load()
        self.used: dict[str, list] = {}
        self.hashed = 0  # files read in this run (cache misses)

    def _load(self) -> dict[str, list]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
            return {}
        return data["files"]

    def digest(self, file: str) -> str:
        """Content digest of ``file`` (``missing`` when it cannot be read)."""
        key = os.path.abspath(file)
        try:
            st = os.stat(key)
        except OSError:
            return "missing"
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.used.get(key) or self.old.get(key)
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == stamp:
            self.used[key] = entry
            return str(entry[3])
        value = file_digest(key)
        self.hashed += 1
        if value != "missing":
            self.used[key] = [*stamp, value]
        return value

    def save(self) -> None:
        """Write the entries used since loading (atomically); a store that cannot take it is left as it is."""
        if self.path is None or self.used == self.old:
            return
        with contextlib.suppress(OSError):  # a read-only or full disk: the cache only saves time; next run re-hashes
            atomic_write_json(self.path, {"format": _FORMAT, "files": self.used})
