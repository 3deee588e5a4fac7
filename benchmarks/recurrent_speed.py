"""The recurrent layers' fused path (torch's LSTM/GRU/RNN kernels) against the step-by-step path.

Issue 4's target: the fused path trains >= 3x faster than the step-by-step path on this CPU and
reaches the same loss within noise.

The same recipe (default ``shakespeare-char-lstm``: 2 LSTM layers x 112, character level, batch
32 x 128) is trained twice with lmlab's Trainer, with the same seed and therefore the same batches
and initial weights, for the same number of steps: once with ``model.fused=true`` (the parameters run
through ``torch._VF.lstm``, cuDNN on a GPU) and once with ``model.fused=false`` (the equations of
``lmlab.nn.recurrent``, one time step at a time). The two paths compute the same function (the
parity tests check outputs and gradients within 1e-5), so the losses differ only by float rounding.

tokens/s = steps x batch x block tokens / training time (the Trainer's clock: evaluation and
checkpoints excluded). The validation loss is the Trainer's final evaluation: the mean over the
whole validation split (``--eval-batches`` limits it). Each training runs in a fresh process.

    .venv/bin/python benchmarks/recurrent_speed.py                    # the recipe's 1500 steps, twice
    .venv/bin/python benchmarks/recurrent_speed.py --steps 300        # shorter
    .venv/bin/python benchmarks/recurrent_speed.py --quick            # smoke run: 20 steps, seconds

On a machine shared with other work, pass ``--threads 1``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import (
    describe_machine,
    fmt_num,
    machine_info,
    mark_started,
    markdown_table,
    run_isolated,
    set_threads,
    write_results,
)

TARGET_SPEEDUP = 3.0


def train_once(recipe: str, fused: bool, overrides: list[str]) -> dict[str, Any]:
    """Train ``recipe`` with ``model.fused=fused`` in a temporary run directory; return its figures."""
    from lmlab.config import load_config
    from lmlab.runs import train_run
    from lmlab.train import read_metrics

    out = Path(tempfile.mkdtemp(prefix=f"bench-{recipe}-{'fused' if fused else 'step'}-"))
    try:
        cfg = load_config(recipe, [*overrides, f"model.fused={'true' if fused else 'false'}"])
        mark_started()
        t0 = time.perf_counter()
        final = train_run(cfg, out)
        wall = time.perf_counter() - t0
        records = read_metrics(out)
        train_s = float(records[-1]["elapsed_s"])
        steps = int(cfg.train.max_steps)
        tokens = steps * int(cfg.train.batch_size) * int(cfg.data.block_size)
        return {
            "fused": fused,
            "steps": steps,
            "batch": f"{cfg.train.batch_size}x{cfg.data.block_size}",
            "tokens": tokens,
            "train_s": train_s,
            "wall_s": wall,
            "tokens_per_s": tokens / train_s,
            "val_loss": float(final["val_loss"]),
            "train_loss_curve": [(r["step"], r["loss"]) for r in records if "loss" in r],
            "precision": cfg.train.precision,
            "model": {
                k: getattr(cfg.model, k)
                for k in ("cell", "n_embd", "hidden", "n_layer")
                if hasattr(cfg.model, k)
            },
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--recipe", default="shakespeare-char-lstm", help="a recurrent recipe (default %(default)s)"
    )
    ap.add_argument(
        "--steps", type=int, default=None, help="training steps of each run (default: the recipe's)"
    )
    ap.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="validation batches of the final evaluation (default: the whole split; quick 4)",
    )
    ap.add_argument("--seed", type=int, default=None, help="train.seed of both runs (default: the recipe's)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 4 validation batches")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--out", default=None, help="results name (default recurrent_speed[_quick])")
    args = ap.parse_args(argv)

    set_threads(args.threads)
    threads = torch.get_num_threads()
    steps = args.steps or (20 if args.quick else None)
    eval_batches = args.eval_batches if args.eval_batches is not None else (4 if args.quick else None)
    overrides = ["train.progress=false", "train.eval_interval=0", f"train.threads={threads}"]
    if steps:
        overrides += [f"train.max_steps={steps}", f"train.log_interval={max(1, min(50, steps // 4))}"]
    if eval_batches is not None:
        overrides.append(f"train.eval_batches={eval_batches}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    info = machine_info()

    print(
        f"# Recurrent training: fused kernels vs step by step ({args.recipe}"
        f"{', QUICK smoke run' if args.quick else ''})\n"
    )
    print(f"machine: {describe_machine(info)}")
    print(f"overrides of both runs: {' '.join(overrides)}")
    sys.stdout.flush()

    results = {}
    for fused in (True, False):
        name = "fused (torch kernels)" if fused else "step by step (equations)"
        print(f"... {name}", end="", flush=True)
        res = run_isolated(
            train_once, {"recipe": args.recipe, "fused": fused, "overrides": overrides}, threads=threads
        ).value
        results[fused] = res
        print(
            f": {res['train_s']:.1f} s, {res['tokens_per_s']:,.0f} tokens/s, val loss {res['val_loss']:.4f}",
            flush=True,
        )

    fast, slow = results[True], results[False]
    speedup = slow["train_s"] / fast["train_s"]
    rows = [
        [
            name,
            r["steps"],
            r["batch"],
            f"{r['train_s']:.1f}",
            fmt_num(r["tokens_per_s"], 0),
            f"{r['val_loss']:.4f}",
            f"{slow['train_s'] / r['train_s']:.2f}x",
        ]
        for name, r in (("fused (torch kernels)", fast), ("step by step (equations)", slow))
    ]
    print()
    print(
        markdown_table(
            ["path", "steps", "batch", "train time (s)", "tokens/s", "val loss", "speed vs step by step"],
            rows,
        )
    )
    diff = fast["val_loss"] - slow["val_loss"]
    print(f"\nval loss difference (fused - step by step): {diff:+.4f}")
    verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
    print(
        f"target (issue 4): fused >= {TARGET_SPEEDUP:.0f}x faster than step by step: "
        f"{speedup:.2f}x, {verdict}"
    )
    if args.quick:
        print("(QUICK run: few steps, partial validation; figures are a smoke test only)")

    path = write_results(
        args.out or ("recurrent_speed_quick" if args.quick else "recurrent_speed"),
        {
            "benchmark": "recurrent_speed",
            "quick": args.quick,
            "machine": info,
            "recipe": args.recipe,
            "overrides": overrides,
            "results": [fast, slow],
            "speedup": speedup,
            "val_loss_difference": diff,
            "target_speedup": TARGET_SPEEDUP,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
