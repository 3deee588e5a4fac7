"""The lineage, side by side: RNN -> LSTM / GRU -> GPT on the same text, fixed-context seq2seq ->
seq2seq + attention -> Transformer on the same translations.

    python benchmarks/lineage.py                       # all three parts, 60 s per language model
    python benchmarks/lineage.py --budget 120          # training seconds per language model
    python benchmarks/lineage.py --skip-lm --skip-speed --translation \\
        transformer=runs/m30k-en-de lstm=runs/m30k-lstm lstm-attention=runs/m30k-lstm-att

1. Language models on tiny Shakespeare (characters): the recipes shakespeare-char-rnn, -lstm, -gru and
   shakespeare-char (GPT), all about 210k parameters, each trained for the same wall-clock budget:
   a short timing run measures seconds per step, then max_steps = budget / (s/step), so each keeps
   its whole learning-rate schedule. Validation loss is the mean over the whole validation split in
   windows of the recipe's training length (128 characters for the recurrent models, 64 for the GPT,
   whose context is 64); perplexity = exp(loss) per character.
2. Training tokens/s against sequence length, LSTM language model (fused kernels) vs GPT of about
   the same parameters, 8,192 tokens a batch (batch x length constant): forward, backward and an
   AdamW step on random tokens. A recurrence is sequential in time; attention is parallel over it.
3. Translation (trained runs, given as NAME=RUN_DIR): test2016 BLEU with beam 4, and BLEU by source
   length (words) as the classic picture of the fixed-context model falling off on long sentences.
   The runs are trained by their recipes (`lmlab train multi30k-en-de-lstm --out ...`); their
   training times are read from their metrics.jsonl.

Tables go to stdout, numbers to benchmarks/results/lineage.json, PNGs to docs/img/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS_DIR, fmt_num, machine_info, markdown_table, set_threads, write_results  # noqa: E402
from lmlab.config import load_config  # noqa: E402
from lmlab.models import build_model  # noqa: E402
from lmlab.runs import train_run  # noqa: E402
from lmlab.train import read_metrics  # noqa: E402

LM_RECIPES = {
    "RNN (tanh)": "shakespeare-char-rnn",
    "LSTM": "shakespeare-char-lstm",
    "GRU": "shakespeare-char-gru",
    "GPT": "shakespeare-char",
}
IMG_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"
BUCKETS = [(1, 8), (9, 11), (12, 14), (15, 18), (19, 24), (25, 1000)]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _seconds_per_step(recipe: str, probe_steps: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="lineage-probe-"))
    try:
        cfg = load_config(
            recipe,
            [
                "train.progress=false",
                f"train.max_steps={probe_steps}",
                "train.log_interval=1",
                "train.eval_interval=0",
                f"train.warmup_steps={min(5, probe_steps)}",
            ],
        )
        train_run(cfg, out)
        rows = [r for r in read_metrics(out) if "elapsed_s" in r and "step" in r]
        skip = max(2, probe_steps // 4)  # first steps pay for allocation and warm-up
        a, b = rows[skip - 1], rows[-1]
        return (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def lm_part(budget: float, probe_steps: int) -> list[dict[str, Any]]:
    rows = []
    for name, recipe in LM_RECIPES.items():
        sps = _seconds_per_step(recipe, probe_steps)
        cfg = load_config(recipe)
        steps = max(50, int(budget / sps))
        warmup = min(cfg.train.warmup_steps, steps // 10)
        out = Path(tempfile.mkdtemp(prefix=f"lineage-{recipe}-"))
        try:
            cfg = load_config(
                recipe,
                [
                    "train.progress=false",
                    f"train.max_steps={steps}",
                    "train.eval_interval=0",
                    f"train.warmup_steps={warmup}",
                    "train.log_interval=50",
                ],
            )
            final = train_run(cfg, out)
            last = read_metrics(out)[-1]
            window = cfg.data.block_size or cfg.model.block_size
            model = build_model(cfg.family, _filled(cfg.model, out))
            rows.append(
                {
                    "model": name,
                    "recipe": recipe,
                    "params": _n_params(model),
                    "steps": steps,
                    "tokens_per_s": steps * cfg.train.batch_size * window / last["elapsed_s"],
                    "train_s": last["elapsed_s"],
                    "window": window,
                    "val_loss": final["val_loss"],
                    "ppl": math.exp(final["val_loss"]),
                }
            )
            print(
                f"  {name}: {rows[-1]['val_loss']:.4f} after {steps} steps, {last['elapsed_s']:.0f} s",
                flush=True,
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return rows


def _filled(model_cfg: Any, run_dir: Path) -> Any:
    from lmlab.runs import read_run_config

    return read_run_config(run_dir).model  # with vocab_size from the tokenizer


def _time_steps(model: torch.nn.Module, batch: int, length: int, vocab: int, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, length))
    y = torch.randint(0, vocab, (batch, length))

    def step() -> None:
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * length / (time.perf_counter() - t0)


def speed_part(lengths: list[int], tokens: int, steps: int) -> list[dict[str, Any]]:
    from lmlab.models.gpt import GPTConfig
    from lmlab.models.rnn import RNNConfig

    vocab = 65
    rows = []
    for length in lengths:
        batch = max(1, tokens // length)
        torch.manual_seed(0)
        lstm = build_model("rnn", RNNConfig(cell="lstm", vocab_size=vocab, n_embd=112, n_layer=2, fused=True))
        gpt = build_model(
            "gpt", GPTConfig(vocab_size=vocab, block_size=length, n_layer=4, n_head=2, n_embd=64)
        )
        row = {"length": length, "batch": batch}
        for name, model in (("LSTM", lstm), ("GPT", gpt)):
            row[f"{name}_params"] = _n_params(model)
            row[f"{name}_tokens_per_s"] = _time_steps(model, batch, length, vocab, steps)
        rows.append(row)
        print(
            f"  length {length}: LSTM {row['LSTM_tokens_per_s']:.0f} tok/s, "
            f"GPT {row['GPT_tokens_per_s']:.0f} tok/s",
            flush=True,
        )
    return rows


def _train_minutes(run_dir: Path) -> float | None:
    rows = [r for r in read_metrics(run_dir) if "elapsed_s" in r]
    return rows[-1]["elapsed_s"] / 60 if rows else None


def translation_part(runs: dict[str, Path], beam: int) -> list[dict[str, Any]]:
    import lmlab
    from lmlab.data.parallel import load_split
    from lmlab.metrics import bleu

    rows = []
    for name, run_dir in runs.items():
        p = lmlab.load(run_dir)
        text = load_split(p.config.data, "test2016")
        t0 = time.perf_counter()
        result = p.evaluate("test2016", beam=beam)
        decode_s = time.perf_counter() - t0
        hyps = result["hypotheses"]
        by_bucket = {}
        for lo, hi in BUCKETS:
            idx = [i for i, s in enumerate(text.src) if lo <= len(s.split()) <= hi]
            if idx:
                score = bleu([hyps[i] for i in idx], [text.tgt[i] for i in idx], tokenize=p.bleu_tokenize)
                by_bucket[f"{lo}-{hi if hi < 1000 else ''}"] = {"bleu": score["bleu"], "sentences": len(idx)}
        rows.append(
            {
                "model": name,
                "run": str(run_dir),
                "family": p.config.family,
                "params": _n_params(p.model),
                "train_min": _train_minutes(run_dir),
                "bleu": result["bleu"],
                "chrf": result["chrf"],
                "decode_s": decode_s,
                "by_length": by_bucket,
            }
        )
        print(f"  {name}: BLEU {result['bleu']:.2f}", flush=True)
    return rows


def plot_speed(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["length"] for r in rows]
    for name in ("LSTM", "GPT"):
        ax.plot(xs, [r[f"{name}_tokens_per_s"] for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (tokens; batch x length = constant)")
    ax.set_ylabel("training tokens / s")
    ax.set_title("Training speed against sequence length (CPU)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_buckets(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        labels = list(r["by_length"])
        ax.plot(range(len(labels)), [r["by_length"][k]["bleu"] for k in labels], marker="o", label=r["model"])
    if rows:
        labels = list(rows[0]["by_length"])
        counts = [rows[0]["by_length"][k]["sentences"] for k in labels]
        ax.set_xticks(range(len(labels)), [f"{k}\n({n})" for k, n in zip(labels, counts)])
    ax.set_xlabel("source length in words (sentences)")
    ax.set_ylabel("BLEU (test2016, beam 4)")
    ax.set_title("Multi30k en-de: BLEU by source length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per language model")
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--lengths", default="32,64,128,256,512")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per batch in the speed part")
    ap.add_argument("--speed-steps", type=int, default=3)
    ap.add_argument("--translation", nargs="*", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--skip-lm", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budgets, to check the script runs")
    args = ap.parse_args()
    if args.threads:
        set_threads(args.threads)
    if args.quick:
        args.budget, args.probe_steps, args.lengths, args.speed_steps = 3.0, 8, "32,64", 1
    runs = {}
    for item in args.translation:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_dir():
            sys.exit(f"--translation takes NAME=RUN_DIR with an existing run directory (got {item!r})")
        runs[name] = Path(path)

    info = machine_info()
    previous = RESULTS_DIR / "lineage.json"  # a part that is skipped keeps its last figures
    keep = previous.is_file() and not args.quick
    results: dict[str, Any] = json.loads(previous.read_text()) if keep else {}
    results["machine"] = info
    if not args.skip_lm:
        print(f"Language models on tiny Shakespeare, {args.budget:.0f} s of training each:", flush=True)
        lm = lm_part(args.budget, args.probe_steps)
        results["lm"], results["budget_s"] = lm, args.budget
        print(
            markdown_table(
                ["model", "params", "steps", "train s", "tokens/s", "window", "val loss", "ppl"],
                [
                    [
                        r["model"],
                        f"{r['params']:,}",
                        r["steps"],
                        fmt_num(r["train_s"]),
                        fmt_num(r["tokens_per_s"], 0),
                        r["window"],
                        f"{r['val_loss']:.4f}",
                        f"{r['ppl']:.2f}",
                    ]
                    for r in lm
                ],
            )
        )
    if not args.skip_speed:
        lengths = [int(x) for x in args.lengths.split(",")]
        print(f"Training tokens/s against sequence length ({args.tokens} tokens a batch):", flush=True)
        speed = speed_part(lengths, args.tokens, args.speed_steps)
        results["speed"] = speed
        print(
            markdown_table(
                ["length", "batch", "LSTM tokens/s", "GPT tokens/s", "GPT / LSTM"],
                [
                    [
                        r["length"],
                        r["batch"],
                        fmt_num(r["LSTM_tokens_per_s"], 0),
                        fmt_num(r["GPT_tokens_per_s"], 0),
                        f"{r['GPT_tokens_per_s'] / r['LSTM_tokens_per_s']:.2f}",
                    ]
                    for r in speed
                ],
            )
        )
        if not args.quick:
            plot_speed(speed, IMG_DIR / "lineage_speed_vs_length.png")
    if runs:
        print("Translation, Multi30k test2016:", flush=True)
        tr = translation_part(runs, args.beam)
        results["translation"] = tr
        buckets = list(tr[0]["by_length"])
        print(
            markdown_table(
                [
                    "model",
                    "family",
                    "params",
                    "train min",
                    f"BLEU (beam {args.beam})",
                    "chrF",
                    *[f"BLEU {b}" for b in buckets],
                ],
                [
                    [
                        r["model"],
                        r["family"],
                        f"{r['params']:,}",
                        fmt_num(r["train_min"]),
                        f"{r['bleu']:.2f}",
                        f"{r['chrf']:.1f}",
                        *[f"{r['by_length'][b]['bleu']:.1f}" for b in buckets],
                    ]
                    for r in tr
                ],
            )
        )
        if not args.quick:
            plot_buckets(tr, IMG_DIR / "lineage_bleu_by_length.png")
    if not args.quick:
        print(f"results: {write_results('lineage', results)}")


if __name__ == "__main__":
    main()
