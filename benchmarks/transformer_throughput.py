"""Training throughput of the encoder-decoder Transformer `base`: lmlab's against torch.nn.Transformer.

Issue 3's target: the training throughput (source + target tokens/s) of lmlab's ``base`` Transformer
(N = 6 + 6 layers, d_model 512, 8 heads, d_ff 2048, dropout 0.1) is >= 2x that of
``torch.nn.Transformer`` of the same sizes under bf16 autocast, measured in the same benchmark run,
at batch 64 x 32/32 tokens.

Both models are complete translation models with the same pieces around the stacks:

* lmlab: ``lmlab.models.transformer.Transformer(TransformerConfig.named('base', ...))`` with one
  shared source/target/output embedding matrix (``share_embeddings``, as the bundled recipes), its
  loss ``lmlab.tasks.translation.label_smoothed_nll`` (ε = 0.1, padding ignored) and
  ``lmlab.train.build_optimizer`` (fused Adam, β = (0.9, 0.98), ε = 1e-9), what lmlab's Trainer runs;
* reference: a plain script's model: shared embedding (× √d_model) + sinusoidal positions + dropout
  -> ``torch.nn.Transformer(d_model=512, nhead=8, 6, 6, 2048, dropout=0.1, batch_first=True)``
  (post-LN, ReLU; it adds a final LayerNorm to each stack) -> tied output projection, with
  ``F.cross_entropy(label_smoothing=0.1, ignore_index=pad)`` (the same loss) and
  ``torch.optim.Adam(fused=True)`` with the same hyper-parameters.

One step = forward + loss + backward + gradient clipping (norm 1.0) + optimizer step, in training
mode (dropout on), on random token ids: 64 source sentences of 32 tokens and 64 targets of 32 tokens
(BOS + 31 fed, 32 predicted), the source padding mask passed as in training. tokens/s = (source +
target tokens) per step x timed steps / their time. Every measurement runs in a fresh process; fp32
and bf16 autocast for each model; ``auto`` is the precision lmlab's Trainer picks on this machine.

    .venv/bin/python benchmarks/transformer_throughput.py                 # base, 64 x 32/32
    .venv/bin/python benchmarks/transformer_throughput.py --quick         # smoke run: tiny sizes, seconds

Without native bf16 (no AMX / AVX512-BF16) bf16 matmuls are emulated, 10-100x slower than fp32: the
bf16 rows then run 1 step under ``--bf16-timeout`` and, if stopped, report an upper bound ('<').
On a machine shared with other work, pass ``--threads 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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

BASE: dict[str, Any] = {
    "size": "base",
    "d_model": 512,
    "n_heads": 8,
    "n_encoder_layers": 6,
    "n_decoder_layers": 6,
    "d_ff": 2048,
    "dropout": 0.1,
}
"""lmlab's ``TRANSFORMER_SIZES['base']`` (Table 3 of the paper), spelt out for the reference."""
QUICK: dict[str, Any] = {
    "size": "tiny",
    "d_model": 64,
    "n_heads": 4,
    "n_encoder_layers": 2,
    "n_decoder_layers": 2,
    "d_ff": 256,
    "dropout": 0.1,
}


class TorchTransformerMT(nn.Module):
    """A translation model around ``torch.nn.Transformer``, as a plain training script writes it."""

    def __init__(
        self,
        vocab: int,
        d_model: int,
        n_heads: int,
        n_encoder_layers: int,
        n_decoder_layers: int,
        d_ff: int,
        dropout: float,
        max_len: int,
    ) -> None:
        super().__init__()
        from lmlab.nn.positional import sinusoidal_table

        self.emb = nn.Embedding(vocab, d_model)
        nn.init.normal_(self.emb.weight, std=d_model**-0.5)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)
        self.scale = math.sqrt(d_model)
        self.drop = nn.Dropout(dropout)
        self.transformer = nn.Transformer(
            d_model, n_heads, n_encoder_layers, n_decoder_layers, d_ff, dropout, batch_first=True
        )
        self.out = nn.Linear(d_model, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, src_padding_mask: torch.Tensor
    ) -> torch.Tensor:
        s, t = src.size(1), tgt_in.size(1)
        x = self.drop(self.emb(src) * self.scale + self.pe[:s])
        y = self.drop(self.emb(tgt_in) * self.scale + self.pe[:t])
        causal = torch.triu(
            torch.ones(t, t, dtype=torch.bool, device=src.device), diagonal=1
        )  # True = masked
        h = self.transformer(
            x,
            y,
            tgt_mask=causal,
            src_key_padding_mask=src_padding_mask,
            memory_key_padding_mask=src_padding_mask,
            tgt_is_causal=True,
        )
        return self.out(h)


def _build(impl: str, sizes: dict[str, Any], vocab: int, max_len: int) -> tuple[nn.Module, Any, Any]:
    """(model, optimizer, loss_fn(logits, target, pad)) of ``impl`` 'lmlab' or 'torch'."""
    kw = {k: v for k, v in sizes.items() if k != "size"}
    if impl == "lmlab":
        from lmlab.config import TrainConfig
        from lmlab.models.transformer import Transformer, TransformerConfig
        from lmlab.tasks.translation import label_smoothed_nll
        from lmlab.train import build_optimizer

        cfg = TransformerConfig.named(
            "base", **kw, src_vocab_size=vocab, tgt_vocab_size=vocab, share_embeddings=True, max_len=max_len
        )
        model = Transformer(cfg)
        opt = build_optimizer(
            model, TrainConfig(optimizer="adam", lr=1e-4, beta2=0.98, eps=1e-9, weight_decay=0.0)
        )
        return model, opt, lambda logits, y, pad: label_smoothed_nll(logits, y, 0.1, pad)
    if impl == "torch":
        model = TorchTransformerMT(vocab, max_len=max_len, **kw)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)

        def loss_fn(logits: torch.Tensor, y: torch.Tensor, pad: int) -> torch.Tensor:
            return F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)),
                y.reshape(-1),
                label_smoothing=0.1,
                ignore_index=pad,
            )

        return model, opt, loss_fn
    raise ValueError(f"unknown implementation {impl!r}")


def measure_training(
    impl: str,
    precision: str,
    sizes: dict[str, Any],
    vocab: int,
    batch_size: int,
    src_len: int,
    tgt_len: int,
    warmup: int,
    steps: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Build model + optimizer, run ``warmup`` untimed and ``steps`` timed training steps."""
    t_setup = time.perf_counter()
    torch.manual_seed(seed)
    max_len = max(src_len, tgt_len) + 8
    model, opt, loss_fn = _build(impl, sizes, vocab, max_len)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    pad, bos = vocab - 3, vocab - 2  # the special ids come after the tokenizer's vocabulary
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, vocab - 3, (batch_size, src_len), generator=g)
    y = torch.randint(0, vocab - 3, (batch_size, tgt_len), generator=g)
    tgt_in = torch.cat([torch.full((batch_size, 1), bos), y[:, :-1]], dim=1)
    src_padding_mask = torch.zeros(batch_size, src_len, dtype=torch.bool)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    losses: list[float] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = model(src, tgt_in, src_padding_mask)
            loss = loss_fn(logits, y, pad)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())

    setup_s = time.perf_counter() - t_setup
    mark_started()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    tokens = batch_size * (src_len + tgt_len)
    return {
        "impl": impl,
        "precision": precision,
        "n_params": n_params,
        "setup_s": setup_s,
        "warmup_steps": warmup,
        "steps": steps,
        "step_times_s": times,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens * steps / sum(times),
        "losses": losses,
        "timed_out": False,
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """a's tokens/s over b's; a bound ('≥', '≤') where one of them is only an upper bound."""
    if a is None or b is None or a.get("tokens_per_s") is None or b.get("tokens_per_s") is None:
        return "-"
    ta, tb = a["tokens_per_s"], b["tokens_per_s"]
    if not a["timed_out"] and not b["timed_out"]:
        return f"{ta / tb:.2f}x"
    if not a["timed_out"]:
        return f"≥ {ta / tb:.2f}x"
    if not b["timed_out"]:
        return f"≤ {ta / tb:.2f}x"
    return "?"


def _tps(res: dict[str, Any] | None) -> str:
    if res is None:
        return "-"
    if res.get("tokens_per_s") is None:
        return "n/a"
    return ("< " if res["timed_out"] else "") + fmt_num(res["tokens_per_s"])


def main(argv: list[str] | None = None) -> int:
    from lmlab.train import cpu_has_fast_bf16, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, small batch, few steps")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="sentence pairs per step (default 64; quick 8)"
    )
    ap.add_argument(
        "--src-len", type=int, default=None, help="source tokens per sentence (default 32; quick 16)"
    )
    ap.add_argument(
        "--tgt-len", type=int, default=None, help="target tokens per sentence (default 32; quick 16)"
    )
    ap.add_argument(
        "--vocab",
        type=int,
        default=8003,
        help="model vocabulary incl. 3 special ids (default 8003: the recipes' joint BPE 8k)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 3; quick 2)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="measure the fp32 rows this many times, keep the best"
    )
    ap.add_argument("--skip-bf16", action="store_true", help="measure fp32 only")
    ap.add_argument(
        "--bf16-steps",
        type=int,
        default=None,
        help="timed bf16 steps (default: --steps with native bf16, else 1)",
    )
    ap.add_argument(
        "--bf16-warmup",
        type=int,
        default=None,
        help="untimed bf16 steps (default: --warmup with native bf16, else 0)",
    )
    ap.add_argument(
        "--bf16-timeout",
        type=float,
        default=None,
        help="seconds after which a bf16 measurement is stopped and reported as an upper "
        "bound (default without native bf16: 600, quick 60; none with native bf16)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--out", default=None, help="results name (default transformer_throughput[_quick])")
    args = ap.parse_args(argv)

    set_threads(args.threads)
    quick = args.quick
    sizes = dict(QUICK if quick else BASE)
    batch = args.batch_size or (8 if quick else 64)
    src_len = args.src_len or (16 if quick else 32)
    tgt_len = args.tgt_len or (16 if quick else 32)
    steps = args.steps or (2 if quick else 3)
    warmup = args.warmup
    fast_bf16 = cpu_has_fast_bf16()
    bf16_steps = args.bf16_steps or (steps if fast_bf16 else 1)
    bf16_warmup = args.bf16_warmup if args.bf16_warmup is not None else (warmup if fast_bf16 else 0)
    bf16_timeout = args.bf16_timeout or (None if fast_bf16 else (60.0 if quick else 600.0))
    auto = resolve_precision("auto", torch.device("cpu"))
    info = machine_info()
    threads = torch.get_num_threads()

    print(f"# Transformer training throughput ({'QUICK smoke run: tiny sizes' if quick else 'base'})\n")
    print(f"machine: {describe_machine(info)}")
    print(
        f"sizes: {sizes}; vocabulary {args.vocab}; batch {batch} x {src_len}/{tgt_len} tokens "
        f"(source/target); warm-up {warmup}, timed steps {steps}; best of {args.rounds} round(s)"
    )
    print(f"lmlab 'auto' precision on this machine resolves to: {auto}")
    if not fast_bf16 and not args.skip_bf16:
        print(
            f"NOTE: no native bf16 on this CPU (no AMX / AVX512-BF16): bf16 matmuls are emulated, 10-100x "
            f"slower than fp32. bf16 rows: {bf16_warmup} warm-up + {bf16_steps} timed step(s), stopped "
            f"after {bf16_timeout:.0f} s (then tokens/s is an upper bound, '<')."
        )
    sys.stdout.flush()

    impls = [("torch.nn.Transformer", "torch"), ("lmlab Transformer", "lmlab")]
    precisions = ["fp32"] + ([] if args.skip_bf16 else ["bf16"])
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for rnd in range(args.rounds):
        for precision in precisions:
            if precision == "bf16" and rnd > 0:
                continue
            is_bf16 = precision == "bf16"
            for label, impl in impls:
                kwargs = {
                    "impl": impl,
                    "precision": precision,
                    "sizes": sizes,
                    "vocab": args.vocab,
                    "batch_size": batch,
                    "src_len": src_len,
                    "tgt_len": tgt_len,
                    "warmup": bf16_warmup if is_bf16 else warmup,
                    "steps": bf16_steps if is_bf16 else steps,
                }
                print(f"... round {rnd + 1}: {label} {precision}", end="", flush=True)
                run = run_isolated(
                    measure_training, kwargs, timeout=bf16_timeout if is_bf16 else None, threads=threads
                )
                if run.timed_out:
                    n_steps = kwargs["warmup"] + kwargs["steps"]
                    tokens = batch * (src_len + tgt_len)
                    res = {
                        "impl": impl,
                        "precision": precision,
                        "timed_out": True,
                        "timeout_s": bf16_timeout,
                        "steps": n_steps,
                        "tokens_per_step": tokens,
                        # n_steps steps take longer than the time spent: tokens/s < tokens·n_steps / that
                        "tokens_per_s": None if not run.work_s else tokens * n_steps / run.work_s,
                        "n_params": (results.get((impl, "fp32")) or {}).get("n_params"),
                    }
                    print(f": stopped after {bf16_timeout:.0f} s, {_tps(res)} tokens/s")
                else:
                    res = run.value
                    print(
                        f": {res['tokens_per_s']:.1f} tokens/s, steps "
                        f"{[round(t, 2) for t in res['step_times_s']]} s, "
                        f"losses {[round(v, 3) for v in res['losses']]}"
                    )
                prev = results.get((impl, precision))
                res["rounds_tokens_per_s"] = (prev or {}).get("rounds_tokens_per_s", []) + [
                    res["tokens_per_s"]
                ]
                if prev is None or (res["tokens_per_s"] or 0) > (prev["tokens_per_s"] or 0):
                    results[(impl, precision)] = res
                else:
                    prev["rounds_tokens_per_s"] = res["rounds_tokens_per_s"]

    rows, records = [], []
    for label, impl in impls:
        fp32, bf16 = results.get((impl, "fp32")), results.get((impl, "bf16"))
        n_params = (fp32 or {}).get("n_params")
        rows.append(
            [
                label,
                "n/a" if n_params is None else f"{n_params / 1e6:.1f}M",
                _tps(fp32),
                _ratio(fp32, results.get(("torch", "fp32"))),
                _tps(bf16),
                _ratio(bf16, results.get(("torch", "bf16"))),
            ]
        )
        for precision, res in (("fp32", fp32), ("bf16", bf16)):
            if res is not None:
                records.append(
                    {
                        **res,
                        "implementation": label,
                        "tokens_per_s_is_upper_bound": res["timed_out"],
                        "ratio_vs_torch_same_precision": _ratio(res, results.get(("torch", precision))),
                        "ratio_vs_torch_bf16": _ratio(res, results.get(("torch", "bf16"))),
                    }
                )
    print()
    print(
        markdown_table(
            [
                "implementation",
                "parameters",
                "fp32 tokens/s",
                "fp32 vs torch",
                "bf16 autocast tokens/s",
                "bf16 vs torch",
            ],
            rows,
        )
    )
    print("\ntokens/s counts source + target tokens.")
    lm_auto, ref_bf16 = results.get(("lmlab", auto)), results.get(("torch", "bf16"))
    if lm_auto is not None and ref_bf16 is not None:
        print(
            f"target (issue 3): lmlab base >= 2x torch.nn.Transformer under bf16 autocast; lmlab auto "
            f"(= {auto}, what its Trainer uses here) vs torch.nn.Transformer bf16: "
            f"{_ratio(lm_auto, ref_bf16)}"
        )
    lm32, ref32 = results.get(("lmlab", "fp32")), results.get(("torch", "fp32"))
    if lm32 is not None and ref32 is not None:
        print(f"fp32 vs fp32 (the honest comparison without native bf16): {_ratio(lm32, ref32)}")
    if quick:
        print("(QUICK run: tiny sizes, few steps, figures are a smoke test only)")

    path = write_results(
        args.out or ("transformer_throughput_quick" if quick else "transformer_throughput"),
        {
            "benchmark": "transformer_throughput",
            "quick": quick,
            "machine": info,
            "sizes": sizes,
            "vocab": args.vocab,
            "batch_size": batch,
            "src_len": src_len,
            "tgt_len": tgt_len,
            "auto_precision": auto,
            "results": records,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
