"""Per-step training metrics: a JSON-lines log (one object per logged step), its CSV twin, a loss-curve picture.

``metrics.jsonl`` is appended line by line and flushed, so a crash loses at most the line being written; on
``--resume`` the lines of steps after the checkpoint are dropped (atomically) so the log continues cleanly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from pcdag.atomic import atomic_write_text


class MetricLog:
    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(path, "")
        elif path.exists():  # keep what the checkpoint covers
            kept = [r for r in read_metrics(path) if r.get("step", 0) < resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metric log; a torn last line (a crash mid-write) is ignored."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows(records)
    atomic_write_text(path, buf.getvalue())


def plot_losses(records: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Total loss and each weighted term against the step (log scale where positive), plus the learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] for r in records]
    terms = [k for k in records[0] if k.startswith("loss/")] if records else []
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    ax.plot(steps, [r.get("loss", math.nan) for r in records], color="black", lw=1.5, label="total")
    for k in terms:
        ax.plot(steps, [r.get(k, math.nan) for r in records], lw=1, label=k.removeprefix("loss/"))
    ax.set_ylabel("loss (weighted terms)")
    if all(r.get("loss", 0) > 0 for r in records):
        ax.set_yscale("log")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax_lr.plot(steps, [r.get("lr", math.nan) for r in records], color="tab:gray")
    ax_lr.set_ylabel("peak lr")
    ax_lr.set_xlabel("step")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers (shared with ``ax``)
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
