"""Validation BLEU against training time, one line per translation run, as a PNG (issue 3).

Reads each run's ``metrics.jsonl``: ``val_bleu`` is logged at every evaluation (greedy translations of
the first ``train.bleu_sentences`` validation sentences) with ``elapsed_s``, the training time so far
(evaluation and checkpointing excluded). Nothing is trained or decoded here.

    .venv/bin/python benchmarks/bleu_vs_time.py runs/m30k-en-de --out docs/img/bleu_vs_time.png
    .venv/bin/python benchmarks/bleu_vs_time.py runs/a runs/b --label "3+3" --label "6+6" --target 37
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from lmlab.errors import LmlabError
    from lmlab.plots import metric_vs_time, plot_bleu_vs_time
    from lmlab.train import read_metrics

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="translation run directories")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "bleu_vs_time.png"), help="PNG to write")
    ap.add_argument(
        "--label",
        action="append",
        default=None,
        help="a legend label per run, in order (default: the directory names)",
    )
    ap.add_argument("--metric", default="val_bleu", help="metrics.jsonl key to plot (default val_bleu)")
    ap.add_argument("--target", type=float, default=None, help="draw a dashed line at this value (e.g. 37)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)

    if args.label is not None and len(args.label) != len(args.runs):
        ap.error(f"{len(args.label)} --label for {len(args.runs)} runs")
    labels = args.label or [Path(r).name for r in args.runs]
    if len(set(labels)) != len(labels):
        labels = [str(r) for r in args.runs]
    runs = dict(zip(labels, args.runs))
    try:
        path = plot_bleu_vs_time(runs, args.out, metric=args.metric, target=args.target, title=args.title)
    except LmlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, run in runs.items():
        pts = metric_vs_time(read_metrics(run), args.metric)
        print(f"{label}: " + ", ".join(f"{m:.1f} min -> {v:.2f}" for m, v in pts))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
