"""Training throughput of GPT-2 small on the CPU: lmlab's GPT vs transformers' GPT2LMHeadModel.

One training step = forward + cross-entropy + backward + gradient clipping (norm 1.0) + AdamW step, on a
batch of B sequences of T tokens (default 4 x 256), for:

* transformers ``GPT2LMHeadModel`` (SDPA attention) in fp32 and under bf16 autocast: the reference;
  optimizer ``torch.optim.AdamW(fused=True)`` (transformers' Trainer's default on torch >= 2.8);
* lmlab ``GPT`` in fp32, under bf16 autocast, and in 'auto' (the precision lmlab's Trainer picks here:
  ``lmlab.train.resolve_precision('auto', cpu)``); optimizer ``lmlab.train.build_optimizer`` (AdamW).

Every measurement runs in a fresh process. tokens/s = B·T·steps / time of the timed steps (after warm-up).

MFU = (flops per token) · tokens/s / peak, with flops per token = 6·N + 12·n_layer·n_embd·T (Kaplan et al.
2020 / PaLM appendix B: 6 flops per parameter per token for forward + backward, plus the attention
score and value products QKᵀ and AV, not discounted for the causal mask), N = parameters without the
position embeddings (the tied token embedding counts once, as the output projection). The peak is
the measured rate of a square matmul in the row's matmul dtype (fp32, or bf16 under autocast).

    .venv/bin/python benchmarks/gpt2_throughput.py            # full: GPT-2 small, 4 x 256
    .venv/bin/python benchmarks/gpt2_throughput.py --quick    # smoke run: a tiny GPT, seconds

On a machine shared with other work, pass ``--threads 1``: a multi-threaded op waits for its slowest
thread, and a thread that has to share its core with another process stalls it by a whole time slice.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

import torch

from common import (
    GPT2_SMALL,
    describe_machine,
    fmt_num,
    machine_info,
    mark_started,
    markdown_table,
    peak_gflops,
    run_isolated,
    set_threads,
    write_results,
)

QUICK_MODEL: dict[str, Any] = {**GPT2_SMALL, "n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128}


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training flops per token: 6·N + 12·n_layer·n_embd·T (see the module docstring)."""
    return 6 * n_params + 12 * n_layer * n_embd * seq_len


def _build(impl: str, cfg: dict[str, Any]) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    """(model, optimizer, N) for ``impl`` 'lmlab' or 'transformers'; N excludes position embeddings."""
    if impl == "lmlab":
        from lmlab.config import TrainConfig
        from lmlab.models.gpt import GPT, GPTConfig
        from lmlab.train import build_optimizer

        model = GPT(GPTConfig(**cfg))
        opt = build_optimizer(model, TrainConfig(lr=6e-4, weight_decay=0.1))
        return model, opt, model.num_params()
    if impl == "transformers":
        from transformers import GPT2Config, GPT2LMHeadModel

        hf_cfg = GPT2Config(
            vocab_size=cfg["vocab_size"],
            n_positions=cfg["block_size"],
            n_embd=cfg["n_embd"],
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            activation_function="gelu_new",  # the tanh approximation, = our gelu_tanh
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            layer_norm_epsilon=1e-5,
            use_cache=False,
        )
        model = GPT2LMHeadModel(hf_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
        n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
        return model, opt, n
    raise ValueError(f"unknown implementation {impl!r}")


def measure_training(
    impl: str,
    precision: str,
    cfg: dict[str, Any],
    batch_size: int,
    seq_len: int,
    warmup: int,
    steps: int,
    seed: int = 0,
    compile: bool = False,
) -> dict[str, Any]:
    """Build the model and optimizer, run ``warmup`` untimed and ``steps`` timed training steps."""
    from lmlab.tasks.lm import lm_loss

    t_setup = time.perf_counter()
    torch.manual_seed(seed)
    model, opt, n_params = _build(impl, cfg)
    model.train()
    fwd = torch.compile(model) if compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    data = torch.randint(
        0, cfg["vocab_size"], (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(seed)
    )
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    losses: list[float] = []

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = fwd(x) if impl == "lmlab" else fwd(input_ids=x).logits
            loss = lm_loss(out, y)
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
    total = sum(times)
    return {
        "impl": impl,
        "precision": precision,
        "compile": compile,
        "n_params": n_params,
        "setup_s": setup_s,
        "warmup_steps": warmup,
        "steps": steps,
        "step_times_s": times,
        "tokens_per_s": batch_size * seq_len * steps / total,
        "losses": losses,
        "timed_out": False,
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """a's tokens/s over b's; a bound ('≥', '≤') where one of them only has an upper bound."""
    if a is None or b is None or a["tokens_per_s"] is None or b["tokens_per_s"] is None:
        return "-"
    ta, tb = a["tokens_per_s"], b["tokens_per_s"]
    if not a["timed_out"] and not b["timed_out"]:
        return f"{ta / tb:.2f}x"
    if not a["timed_out"]:
        return f"≥ {ta / tb:.2f}x"  # b is at most tb
    if not b["timed_out"]:
        return f"≤ {ta / tb:.2f}x"
    return "?"


def main(argv: list[str] | None = None) -> int:
    from lmlab.train import cpu_has_fast_bf16, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: a tiny model and few steps (seconds)")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 4; quick 2)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 256; quick 64)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 3; quick 2)")
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
        help="seconds after which a bf16 measurement is stopped and reported as an upper bound "
        "(default 1200 without native bf16, quick 300; none with native bf16)",
    )
    ap.add_argument("--compile", action="store_true", help="also time lmlab fp32 under torch.compile")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the fp32 rows this many times, keep the best (default 1)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--out", default=None, help="results name (default gpt2_throughput[_quick])")
    args = ap.parse_args(argv)

    set_threads(args.threads)
    quick = args.quick
    cfg = dict(QUICK_MODEL if quick else GPT2_SMALL)
    batch = args.batch_size or (2 if quick else 4)
    seq = args.seq_len or (64 if quick else 256)
    warmup = 1 if args.warmup is None else args.warmup
    steps = args.steps or (2 if quick else 3)
    fast_bf16 = cpu_has_fast_bf16()
    bf16_steps = args.bf16_steps or (steps if fast_bf16 else 1)
    bf16_warmup = args.bf16_warmup if args.bf16_warmup is not None else (warmup if fast_bf16 else 0)
    bf16_timeout = args.bf16_timeout or (None if fast_bf16 else (300.0 if quick else 1200.0))
    auto = resolve_precision("auto", torch.device("cpu"))
    info = machine_info()
    threads = torch.get_num_threads()

    print(f"# GPT-2 training throughput ({'QUICK smoke run: tiny model' if quick else 'GPT-2 small'})\n")
    print(f"machine: {describe_machine(info)}")
    print(
        f"model: {cfg}; batch {batch} x {seq} tokens; warm-up {warmup}, timed steps {steps}; "
        f"best of {args.rounds} round(s)"
    )
    print(f"lmlab 'auto' precision on this machine resolves to: {auto}")
    if not fast_bf16 and not args.skip_bf16:
        print(
            f"NOTE: this CPU has no native bf16 (no AMX / AVX512-BF16): bf16 matmuls are emulated and "
            f"10-100x slower than fp32. bf16 rows: {bf16_warmup} warm-up + {bf16_steps} timed step(s), "
            f"stopped after {bf16_timeout:.0f} s (then tokens/s is an upper bound, '<')."
        )
    sys.stdout.flush()

    peaks = peak_gflops(quick, bf16=not args.skip_bf16)
    print(
        "matmul peak: " + ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s (n={v['n']})" for k, v in peaks.items())
    )
    sys.stdout.flush()

    plan: list[tuple[str, str, str, bool]] = [  # (label, impl, precision, compile)
        ("transformers", "transformers", "fp32", False),
        ("lmlab", "lmlab", "fp32", False),
    ]
    if args.compile:
        plan.append(("lmlab + torch.compile", "lmlab", "fp32", True))
    if not args.skip_bf16:
        plan += [("transformers", "transformers", "bf16", False), ("lmlab", "lmlab", "bf16", False)]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    # fp32 rows are measured in --rounds turns (the best of each row is kept: on a shared machine the
    # fastest run is the one least disturbed); the costly bf16 rows once
    for rnd in range(args.rounds):
        for label, impl, precision, comp in plan:
            is_bf16 = precision == "bf16"
            if is_bf16 and rnd > 0:
                continue
            kwargs = {
                "impl": impl,
                "precision": precision,
                "cfg": cfg,
                "batch_size": batch,
                "seq_len": seq,
                "warmup": max(warmup, 1) if comp else (bf16_warmup if is_bf16 else warmup),
                "steps": bf16_steps if is_bf16 else steps,
                "compile": comp,
            }
            print(f"... round {rnd + 1}: {label} {precision}", end="", flush=True)
            run = run_isolated(
                measure_training, kwargs, timeout=bf16_timeout if is_bf16 else None, threads=threads
            )
            if run.timed_out:  # the steps did not all finish in the time left after the set-up
                n_steps = kwargs["warmup"] + kwargs["steps"]
                res = {
                    "impl": impl,
                    "precision": precision,
                    "compile": comp,
                    "timed_out": True,
                    "timeout_s": bf16_timeout,
                    "steps": n_steps,
                    # n_steps steps take longer than the time spent on them: tokens/s < B·T·n_steps / that
                    "tokens_per_s": None if not run.work_s else batch * seq * n_steps / run.work_s,
                    "n_params": (results.get((impl, "fp32")) or {}).get("n_params"),
                }
                bound = "n/a" if res["tokens_per_s"] is None else f"< {res['tokens_per_s']:.1f}"
                print(f": stopped after {bf16_timeout:.0f} s, {bound} tokens/s")
            else:
                res = run.value
                print(
                    f": {res['tokens_per_s']:.1f} tokens/s, "
                    f"steps {[round(t, 2) for t in res['step_times_s']]} s, "
                    f"losses {[round(v, 3) for v in res['losses']]}"
                )
            prev = results.get((label, precision))
            res["rounds_tokens_per_s"] = (prev or {}).get("rounds_tokens_per_s", []) + [res["tokens_per_s"]]
            if prev is None or (res["tokens_per_s"] or 0) > (prev["tokens_per_s"] or 0):
                results[(label, precision)] = res
            else:
                prev["rounds_tokens_per_s"] = res["rounds_tokens_per_s"]

    ref_fp32 = results.get(("transformers", "fp32"))
    ref_bf16 = results.get(("transformers", "bf16"))
    n_params = (ref_fp32 or {}).get("n_params") or results[("lmlab", "fp32")]["n_params"]  # type: ignore[index]
    fpt = flops_per_token(n_params, cfg["n_layer"], cfg["n_embd"], seq)

    rows = []
    records = []
    order = [(lbl, p) for lbl, _, p, _ in plan]
    order.insert(order.index(("lmlab", "fp32")) + 1, ("lmlab", "auto"))
    for label, precision in order:
        res = results.get((label, auto)) if precision == "auto" else results.get((label, precision))
        if res is None:
            continue
        shown = f"auto (= {auto}, same run)" if precision == "auto" else precision
        peak = peaks.get("bf16" if res["precision"] == "bf16" else "fp32", {}).get("gflops")
        tps = res["tokens_per_s"]
        mfu = None if peak is None or tps is None else fpt * tps / (peak * 1e9)
        bound = "< " if res["timed_out"] else ""
        rows.append(
            [
                label,
                shown,
                "n/a" if tps is None else bound + fmt_num(tps),
                _ratio(res, ref_bf16),
                _ratio(res, ref_fp32),
                # against an emulated bf16 "peak" (whose rate depends on the shape) MFU means nothing
                "n/a"
                if mfu is None or (res["precision"] == "bf16" and not fast_bf16)
                else f"{bound}{100 * mfu:.1f}%",
            ]
        )
        records.append(
            {
                **res,
                "implementation": label,
                "precision": precision,  # 'auto' rows repeat the figures of the precision it resolves to
                "measured_precision": res["precision"],
                "tokens_per_s_is_upper_bound": res["timed_out"],
                "mfu": mfu,
                "ratio_vs_transformers_bf16": _ratio(res, ref_bf16),
                "ratio_vs_transformers_fp32": _ratio(res, ref_fp32),
            }
        )

    print()
    print(
        markdown_table(
            [
                "implementation",
                "precision",
                "tokens/s",
                "vs transformers bf16",
                "vs transformers fp32",
                "MFU",
            ],
            rows,
        )
    )
    print(
        f"\nflops/token = 6·N + 12·n_layer·n_embd·T "
        f"= 6·{n_params:,} + 12·{cfg['n_layer']}·{cfg['n_embd']}·{seq} "
        f"= {fpt / 1e6:.1f} MFLOP; MFU against the measured matmul peak of the row's matmul dtype "
        + ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s" for k, v in peaks.items())
        + "."
    )
    if not fast_bf16 and not args.skip_bf16:
        print("bf16 MFU not shown: without native bf16 the bf16 'peak' is emulation speed (see the JSON).")
    lm_auto = results.get(("lmlab", auto))
    if lm_auto is not None and ref_bf16 is not None:
        print(
            f"target (issue): lmlab >= 3x transformers-bf16 tokens/s; "
            f"lmlab auto ({auto}) vs transformers bf16: "
            f"{_ratio(lm_auto, ref_bf16)}"
        )
    if quick:
        print("(QUICK run: tiny model, few steps, figures are a smoke test only)")

    path = write_results(
        args.out or ("gpt2_throughput_quick" if quick else "gpt2_throughput"),
        {
            "benchmark": "gpt2_throughput",
            "quick": quick,
            "machine": info,
            "model": cfg,
            "batch_size": batch,
            "seq_len": seq,
            "auto_precision": auto,
            "peak_gflops": peaks,
            "flops_per_token": fpt,
            "flops_formula": "6*N + 12*n_layer*n_embd*T, N = parameters without position embeddings",
            "results": records,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
