"""Plots across runs, from their ``metrics.jsonl``: validation BLEU against training time.

Each run directory's ``metrics.jsonl`` has one record per logged step (``lmlab.train.read_metrics``);
the records of an evaluation step also carry the validation metrics (``val_bleu``, ``val_chrf`` for a
translation run: greedy translations of the first ``train.bleu_sentences`` validation sentences).
``elapsed_s`` is the Trainer's training clock: seconds of training, evaluation and checkpointing
excluded, carried over when a run resumes. A resumed run may log a step twice (the steps after its
last checkpoint are trained again); the later record wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmlab.errors import DataError

__all__ = ["metric_vs_time", "plot_bleu_vs_time"]

METRIC_LABELS = {"val_bleu": "validation BLEU", "val_chrf": "validation chrF", "val_loss": "validation loss"}


def metric_vs_time(records: Sequence[dict[str, Any]], metric: str = "val_bleu") -> list[tuple[float, float]]:
    """(training minutes, value) of every record that has ``metric`` and ``elapsed_s``, by step
    (the last record of a step wins; non-finite values are left out)."""
    by_step: dict[int, tuple[float, float]] = {}
    for r in records:
        value, elapsed = r.get(metric), r.get("elapsed_s")
        if not isinstance(value, (int, float)) or not isinstance(elapsed, (int, float)):
            continue
        if math.isfinite(value) and math.isfinite(elapsed):
            by_step[int(r["step"])] = (float(elapsed) / 60.0, float(value))
    return [by_step[s] for s in sorted(by_step)]


def plot_bleu_vs_time(
    runs: Sequence[str | Path] | Mapping[str, str | Path],
    out: str | Path,
    metric: str = "val_bleu",
    target: float | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG of ``metric`` (default validation BLEU) against training minutes, one line per run.

    ``runs``: run directories (labelled by their directory name) or {label: run directory}.
    ``target``: draw a dashed horizontal line at that value. Each line ends with its last value
    written next to it. Raises ``DataError`` for a run without ``metrics.jsonl`` or without any
    record of ``metric``. Returns the path written (atomically: a temporary file, then renamed).
    """
    from matplotlib.figure import Figure  # no pyplot: never touches the global backend

    from lmlab.train import read_metrics

    items = list(runs.items()) if isinstance(runs, Mapping) else [(Path(r).name, r) for r in runs]
    if not items:
        raise DataError("no runs to plot")
    curves = []
    for label, run_dir in items:
        run_dir = Path(run_dir)
        if not (run_dir / "metrics.jsonl").is_file():
            raise DataError(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
        points = metric_vs_time(read_metrics(run_dir), metric)
        if not points:
            raise DataError(
                f"{run_dir}/metrics.jsonl has no '{metric}' with 'elapsed_s' (no evaluation logged?)"
            )
        curves.append((str(label), points))

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for label, points in curves:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        line = ax.plot(xs, ys, "o-", label=label, markersize=4)[0]
        ax.annotate(
            f"{ys[-1]:.1f}",
            (xs[-1], ys[-1]),
            textcoords="offset points",
            xytext=(5, -3),
            fontsize=8,
            color=line.get_color(),
        )
    if target is not None:
        ax.axhline(target, linestyle="--", color="gray", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("training time (minutes; evaluation and checkpoints excluded)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    right = max(p[0] for _, points in curves for p in points)
    ax.set_xlim(0, right * 1.1 if right > 0 else 1.0)  # room for the last values' labels
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"{METRIC_LABELS.get(metric, metric)} against training time")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
