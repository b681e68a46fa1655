"""COLMAP's own log (glog) sent to a file instead of the terminal, its warnings kept for the scene report.

COLMAP logs through glog, which by default also writes every message to stderr (``alsologtostderr``): thousands of
INFO lines per scene, and its warnings printed through ``pcdag --quiet``. While SfM runs, messages of WARNING and
above go to ``<folder>/colmap.<timestamp>.<pid>`` only (nothing on the terminal; glog's own file naming), and
``warnings()`` reads them back: the scene report keeps their count and the first distinct ones. Nodes get no
per-scene folder from the runtime, so the file lives in the backend's temporary folder and goes with it; its
content is what the report keeps. glog's settings are process-wide: they are restored afterwards.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KEEP = 20  # distinct warning texts kept in the report
_PREFIX = re.compile(r"^([WEF])\d{8} [\d:.]+ +\d+ ([^\]]+)\] (.*)$")  # glog: W20261207 20:39:32.1 123 file.cc:45] msg


@contextlib.contextmanager
def colmap_log(pycolmap: Any, folder: Path) -> Iterator[Callable[[], dict]]:
    """Inside: COLMAP's WARNING/ERROR lines go to a file in ``folder``, none to the terminal. Yields a function
    returning ``{"colmap_warnings": count, "colmap_warning_texts": [first distinct texts]}``."""
    log = pycolmap.logging
    names = ("minloglevel", "alsologtostderr", "logtostderr", "logtostdout", "stderrthreshold")
    saved = {name: getattr(log, name) for name in names}
    base = folder / "colmap."
    try:
        log.minloglevel, log.stderrthreshold = 1, 3  # WARNING and above are logged; only FATAL reaches stderr
        log.alsologtostderr = log.logtostderr = log.logtostdout = False
        log.set_log_destination(log.INFO, "")  # INFO (filtered out anyway) has no file
        log.set_log_destination(log.WARNING, str(base))  # WARNING, ERROR and FATAL go to this one file
        yield lambda: read_warnings(folder)
    finally:
        log.set_log_destination(log.WARNING, "")  # closes the file
        for name, value in saved.items():
            setattr(log, name, value)


def read_warnings(folder: Path) -> dict:
    """Count and the first ``KEEP`` distinct texts (``"W file.cc:12: message"``) of the log files in ``folder``."""
    count, texts = 0, []
    for path in sorted(folder.glob("colmap.*")):
        for line in path.read_text(errors="replace").splitlines():
            match = _PREFIX.match(line)
            if not match:
                continue
            count += 1
            text = f"{match[1]} {match[2]}: {match[3]}"
            if len(texts) < KEEP and text not in texts:
                texts.append(text)
    return {"colmap_warnings": count, "colmap_warning_texts": texts}
