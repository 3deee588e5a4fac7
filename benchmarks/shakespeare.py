"""Time to quality on tiny Shakespeare (character level), lmlab against a minimal reference loop.

    python benchmarks/shakespeare.py            # reference + classic config + shakespeare-char recipe
    python benchmarks/shakespeare.py --skip-reference

Validation loss is always the mean over the whole validation split (last 10%) in non-overlapping
windows of the block size, the measure `lmlab eval` reports. Training time excludes evaluation and
checkpointing for both implementations.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lmlab.config import load_config  # noqa: E402
from lmlab.data import BUNDLED_SHAKESPEARE  # noqa: E402
from lmlab.runs import train_run  # noqa: E402
from lmlab.tasks import evaluate_lm  # noqa: E402
from lmlab.train import read_metrics  # noqa: E402
from reference_minigpt import train_reference  # noqa: E402

TARGET_LOSS, TARGET_S, CLASSIC_LOSS = 1.88, 25.0, 1.924


def run_lmlab(recipe: str, overrides: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{recipe}-"))
    try:
        cfg = load_config(recipe, ["train.progress=false", "train.eval_interval=0", *overrides])
        t0 = time.perf_counter()
        final = train_run(cfg, out)
        wall = time.perf_counter() - t0
        last = read_metrics(out)[-1]
        return {
            "name": f"lmlab {recipe}",
            "steps": cfg.train.max_steps,
            "batch": f"{cfg.train.batch_size}x{cfg.model.block_size}",
            "train_s": last["elapsed_s"],
            "wall_s": wall,
            "val_loss": final["val_loss"],
            "precision": cfg.train.precision,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_reference() -> dict:
    text = Path(BUNDLED_SHAKESPEARE).read_text()
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in chars], dtype=np.int64)  # warm
    table = {c: i for i, c in enumerate(chars)}
    ids = np.array([table[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    model, train_s = train_reference(ids[:n], len(chars))
    model.eval()
    val = evaluate_lm(model, ids[n:], 64, batch_size=64)
    return {
        "name": "reference minimal GPT",
        "steps": 2000,
        "batch": "12x64",
        "train_s": train_s,
        "wall_s": train_s,
        "val_loss": val["loss"],
        "precision": "fp32",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-classic", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if not args.skip_reference:
        rows.append(run_reference())
    if not args.skip_classic:
        rows.append(run_lmlab("shakespeare-char-classic", []))
    rows.append(run_lmlab("shakespeare-char", []))
    ref = rows[0]["train_s"] if not args.skip_reference else None
    print(f"\nCPU threads: {torch.get_num_threads()}, torch {torch.__version__}\n")
    print("| run | steps | batch | train time (s) | ms/step | val loss (full split) | time vs reference |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['train_s'] / ref:.2f}x" if ref else "-"
        ms = 1000 * r["train_s"] / r["steps"]
        print(
            f"| {r['name']} | {r['steps']} | {r['batch']} | {r['train_s']:.1f} | {ms:.1f} "
            f"| {r['val_loss']:.4f} | {ratio} |"
        )
    ours = rows[-1]
    print(
        f"\nshakespeare-char: val {ours['val_loss']:.4f} in {ours['train_s']:.1f} s "
        f"(target <= {TARGET_LOSS} in <= {TARGET_S:.0f} s: "
        f"{'met' if ours['val_loss'] <= TARGET_LOSS and ours['train_s'] <= TARGET_S else 'NOT met'})"
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "shakespeare.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
