"""Shared helpers of the benchmarks: machine description, timing, peak matmul rate, isolated runs,
markdown tables and the JSON results file."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

GPT2_SMALL: dict[str, Any] = {
    "vocab_size": 50257,
    "block_size": 1024,
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "activation": "gelu_tanh",
    "dropout": 0.0,
}
"""GPT-2 small (124M parameters) as ``GPTConfig`` keyword arguments."""


# --------------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, its vector extensions, threads, library versions."""
    from lmlab.train import cpu_has_fast_bf16

    flags = cpu_flags()
    simd = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "simd": simd,
        "fast_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def describe_machine(info: dict[str, Any]) -> str:
    bf16 = "native bf16 (AMX/AVX512-BF16)" if info["fast_bf16"] else "NO native bf16 (emulated: very slow)"
    return (
        f"{info['cpu']}; {info['torch_threads']} torch threads of {info['cores_visible']} cores; "
        f"SIMD: {' '.join(info['simd']) or '?'}; {bf16}; torch {info['torch']}, "
        f"transformers {info['transformers']}; load average {info['load_avg_1m']:.2f}"
    )


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------------
# timing


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def matmul_gflops(dtype: torch.dtype, n: int = 2048, min_time: float = 1.0, max_time: float = 120.0) -> float:
    """GFLOP/s of an (n, n) @ (n, n) matmul in ``dtype``: 2n³ flops per product, best of the repetitions.

    One untimed product first, then products until ``min_time`` seconds have passed; stops early once
    ``max_time`` is spent (emulated bf16 can take minutes per large product).
    """
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    t0 = time.perf_counter()
    a @ b
    first = time.perf_counter() - t0
    best = first
    start = time.perf_counter()
    while time.perf_counter() - start < min_time and (time.perf_counter() - start) + best < max_time:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def peak_gflops(quick: bool, bf16: bool = True) -> dict[str, dict[str, float]]:
    """Measured matmul peak of fp32 (and bf16): {'fp32': {'n': n, 'gflops': g}, ...}.

    Emulated bf16 is measured at a smaller size (the rate is flat or falls with size there, and a
    2048³ product takes minutes).
    """
    from lmlab.train import cpu_has_fast_bf16

    n32 = 1024 if quick else 2048
    out = {"fp32": {"n": n32, "gflops": matmul_gflops(torch.float32, n32, min_time=0.5 if quick else 2.0)}}
    if bf16:
        n16 = n32 if cpu_has_fast_bf16() else (256 if quick else 1024)
        out["bf16"] = {"n": n16, "gflops": matmul_gflops(torch.bfloat16, n16, min_time=0.5 if quick else 2.0)}
    return out


# --------------------------------------------------------------------------------------------------
# isolated runs (a fresh process per measurement: clean allocator, no leftovers, a time limit)


_PROGRESS: Any = None  # the queue to the parent, inside a process started by ``run_isolated``


def mark_started() -> None:
    """Tell ``run_isolated``'s parent that the timed work begins now (set-up done); no-op elsewhere."""
    if _PROGRESS is not None:
        _PROGRESS.put(("started", None))


def _child(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int, queue: Any) -> None:
    global _PROGRESS
    _PROGRESS = queue
    try:
        set_threads(threads)
        queue.put(("ok", fn(**kwargs)))
    except BaseException as e:  # report any failure to the parent instead of hanging it
        queue.put(("error", f"{type(e).__name__}: {e}"))


@dataclass
class Isolated:
    """What ``run_isolated`` got back."""

    value: Any = None
    timed_out: bool = False
    work_s: float | None = None
    """Seconds from the child's ``mark_started()`` to the end (result or time limit); None if never marked."""


def run_isolated(
    fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None = None, threads: int = 0
) -> Isolated:
    """``fn(**kwargs)`` in a fresh (spawned) process, stopped after ``timeout`` seconds.

    ``fn`` must be a module-level function and its result picklable; it may call ``mark_started()``
    when its set-up is done, so that a stopped run can still bound the time its work took.
    Raises RuntimeError if ``fn`` failed or the process died.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, kwargs, threads or torch.get_num_threads(), queue))
    deadline = None if timeout is None else time.monotonic() + timeout
    started: float | None = None
    proc.start()
    try:
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                return Isolated(
                    timed_out=True, work_s=None if started is None else time.monotonic() - started
                )
            try:
                status, value = queue.get(timeout=wait)
            except queue_module.Empty:
                if not proc.is_alive():
                    raise RuntimeError(
                        f"{getattr(fn, '__name__', fn)}: the subprocess died (exit code {proc.exitcode})"
                    ) from None
                continue
            if status == "started":
                started = time.monotonic()
            elif status == "error":
                raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in a subprocess: {value}")
            else:
                return Isolated(value=value, work_s=None if started is None else time.monotonic() - started)
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()


# --------------------------------------------------------------------------------------------------
# output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(cells) and all(_is_number(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric))
        + "|"
    )
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in cells)])


def _is_number(s: str) -> bool:
    s = s.strip().lstrip("<>≥≤~").replace(",", "").rstrip("x%")
    try:
        float(s)
    except ValueError:
        return s in ("-", "n/a")
    return True


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def write_results(name: str, data: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``data`` to ``benchmarks/results/<name>.json`` (or ``results_dir``); returns the path."""
    out_dir = results_dir or RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
