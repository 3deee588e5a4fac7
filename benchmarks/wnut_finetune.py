"""WNUT-17 entity tagging from all-MiniLM-L6-v2: transformers vs lmlab, same data and settings.

Both fine-tune a token classifier (all-MiniLM-L6-v2's encoder, a new 13-way BIO classifier) on the
3,394 WNUT-17 training sentences for ``--epochs`` epochs: batch ``--batch``, AdamW at ``--lr`` (weight
decay 0.01 on matrices), linear warmup over 10% of the steps then decay, gradient clipping at 1.0,
128 tokens at most, each word's tag on its first sub-token (the other sub-tokens ignored). Both are
scored the same way on the 1,287 test sentences: entities as seqeval counts them
(``lmlab.metrics.entity_f1``), a word predicted from its first sub-token.

* transformers: ``BertForTokenClassification.from_pretrained`` (SDPA attention), the fast tokenizer
  with ``is_split_into_words`` and ``word_ids()``, ``DataCollatorForTokenClassification`` (dynamic
  padding), shuffled batches (the ``Trainer``'s sampling) in a plain loop, ``AdamW(fused=True)``;
* lmlab: ``lmlab train wnut17-bert init=MINILM`` with the same batch, lr, steps and warmup
  (length-bucketed batches, lmlab's Trainer, cosine decay).

train s = seconds of training only (set-up and evaluation excluded on both sides).

    .venv/bin/python benchmarks/wnut_finetune.py --threads 1
    .venv/bin/python benchmarks/wnut_finetune.py --sentences 64 --epochs 1      # smoke run

Results: benchmarks/results/wnut_finetune.json (wnut_finetune_quick.json with --sentences).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bert_finetune import hf_optimizer, minilm_dir
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

MAX_LEN = 128
WARMUP = 0.1


def wnut_file(split: str) -> Path:
    from lmlab.data.labeled import DATASETS, default_root

    return default_root("wnut17", None) / DATASETS["wnut17"].files[split]


def read_split(split: str, n: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
    from lmlab.config import DataConfig
    from lmlab.data.labeled import load_labeled_split

    data = load_labeled_split(DataConfig(dataset="wnut17"), split, task="tagging")
    words, tags = data.words, data.tags
    return (words[:n], tags[:n]) if n else (words, tags)


def label_list() -> list[str]:
    from lmlab.data.labeled import DATASETS

    return list(DATASETS["wnut17"].labels)


def steps_of(n: int, batch: int, epochs: int) -> int:
    return math.ceil(n / batch) * epochs


# --------------------------------------------------------------------------------------------------
# transformers


def run_transformers(
    model_dir: str, sentences: int | None, epochs: int, batch: int, lr: float, seed: int
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from torch.utils.data import DataLoader

    from lmlab.metrics import entity_f1

    transformers.logging.set_verbosity_error()
    labels = label_list()
    index = {t: i for i, t in enumerate(labels)}
    words, tags = read_split("train", sentences)
    test_words, test_tags = read_split("test")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(seed)
    model = transformers.BertForTokenClassification.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=index,
        attn_implementation="sdpa",
    )

    def encode(ws: list[list[str]], ts: list[list[str]] | None) -> tuple[list[dict[str, Any]], list[Any]]:
        """(the collator's rows, each sentence's word_ids) of tokenised sentences."""
        enc = tok(ws, is_split_into_words=True, truncation=True, max_length=MAX_LEN)
        rows = []
        for i in range(len(ws)):
            word_ids = enc.word_ids(i)
            row = {k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")}
            if ts is not None:  # the tag on each word's first sub-token, -100 elsewhere
                prev, lab = None, []
                for w in word_ids:
                    lab.append(-100 if w is None or w == prev else index[ts[i][w]])
                    prev = w
                row["labels"] = lab
            rows.append(row)
        return rows, [enc.word_ids(i) for i in range(len(ws))]

    collator = transformers.DataCollatorForTokenClassification(tok)
    loader = DataLoader(
        encode(words, tags)[0],
        batch_size=batch,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )
    steps = len(loader) * epochs
    opt, sched = hf_optimizer(model, lr, steps, WARMUP)
    model.train()
    mark_started()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            model(**b).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t0
    model.eval()
    pred: list[list[str]] = []
    rows, test_word_ids = encode(test_words, None)
    with torch.no_grad():
        for lo in range(0, len(rows), 64):
            chunk = rows[lo : lo + 64]
            b = collator(chunk)
            best = model(**b).logits.argmax(-1)
            for j, i in enumerate(range(lo, lo + len(chunk))):
                out = ["O"] * len(test_words[i])  # words cut off by truncation: O
                seen: set[int] = set()
                for t, w in enumerate(test_word_ids[i]):
                    if w is not None and w not in seen:
                        seen.add(w)
                        out[w] = labels[int(best[j, t])]
                pred.append(out)
    scores = entity_f1(test_tags, pred)
    return {"steps": steps, "sentences": len(words), "train_s": train_s, **_prf(scores)}


def _prf(scores: dict[str, float]) -> dict[str, float]:
    return {k: float(scores[k]) for k in ("precision", "recall", "f1")}


# --------------------------------------------------------------------------------------------------
# lmlab


def run_lmlab(
    model_dir: str, sentences: int | None, epochs: int, batch: int, lr: float, seed: int
) -> dict[str, Any]:
    import lmlab
    from lmlab.config import load_config
    from lmlab.runs import train_run
    from lmlab.train import read_metrics

    words, tags = read_split("train", sentences)
    steps = steps_of(len(words), batch, epochs)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"init={model_dir}",
            f"train.lr={lr}",
            f"train.batch_size={batch}",
            f"train.max_steps={steps}",
            f"train.warmup_steps={math.ceil(WARMUP * steps)}",
            f"train.seed={seed}",
            "train.progress=false",
            f"train.log_interval={steps}",
            "train.eval_interval=0",
            "train.checkpoint_interval=0",
        ]
        if sentences:
            train_file = Path(tmp) / "train.conll"
            train_file.write_text(
                "".join("".join(f"{w}\t{t}\n" for w, t in zip(ws, ts)) + "\n" for ws, ts in zip(words, tags)),
                encoding="utf-8",
            )
            overrides += [
                "data.dataset=files",
                f"data.train_file={train_file}",
                f"data.valid_file={wnut_file('valid')}",
                f"data.labels={label_list()}".replace("'", '"'),
            ]
        cfg = load_config("wnut17-bert", overrides)
        run = Path(tmp) / "run"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mark_started()
            train_run(cfg, run)
            train_s = float(read_metrics(run)[-1]["elapsed_s"])
            m = lmlab.load(run).evaluate(data=wnut_file("test"))
    return {"steps": steps, "sentences": len(words), "train_s": train_s, **_prf(m)}


# --------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=None, help="train on the first N sentences")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each run (0: torch's default)")
    ap.add_argument("--systems", default="transformers,lmlab")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model_dir = minilm_dir()
    if args.threads:
        set_threads(args.threads)
    info = machine_info()
    print(describe_machine(info), flush=True)
    fns = {"transformers": run_transformers, "lmlab": run_lmlab}
    rows: list[dict[str, Any]] = []
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        print(f"running {system} ...", flush=True)
        kwargs = dict(
            model_dir=model_dir,
            sentences=args.sentences,
            epochs=args.epochs,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
        )
        out = run_isolated(fns[system], kwargs, threads=args.threads).value
        rows.append({"system": system, **out})
        print(f"  {out['train_s']:.0f} s, test F1 {100 * out['f1']:.1f}", flush=True)
    ref = next((r for r in rows if r["system"] == "transformers"), None)
    table = markdown_table(
        ["system", "steps", "train s", "vs transformers", "test P", "test R", "test F1"],
        [
            [
                r["system"],
                str(r["steps"]),
                fmt_num(r["train_s"], 0),
                f"{ref['train_s'] / r['train_s']:.2f}x" if ref else "n/a",
                f"{100 * r['precision']:.1f}",
                f"{100 * r['recall']:.1f}",
                f"{100 * r['f1']:.1f}",
            ]
            for r in rows
        ],
    )
    print(table)
    settings = {k: getattr(args, k) for k in ("sentences", "epochs", "batch", "lr", "threads", "seed")}
    name = "wnut_finetune_quick" if args.sentences else "wnut_finetune"
    path = write_results(name, {"machine": info, "settings": settings, "rows": rows, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
