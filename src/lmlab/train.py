"""The Trainer: optimizer, LR schedule, mixed precision, gradient accumulation, clipping, evaluation,
metrics, loss plot, atomic checkpoints with exact resume, and DDP (when launched by torchrun).

It knows the Task protocol only (docs/architecture.md): ``task.batch(step, micro, n_micro, rank,
world, batch_size)``, ``task.loss(model, batch) -> (loss, n_tokens)`` and
``task.evaluate(model, max_batches) -> {"val_loss": ..., ...}``.

Steps are counted as completed optimizer updates: ``trainer.step == k`` means k updates are done,
the next update draws ``task.batch(k, ...)``, and the metrics line and checkpoint labelled k are
written after the k-th update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from lmlab.checkpoint import (
    CHECKPOINTS_DIR,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
    unwrap_model,
)
from lmlab.config import TrainConfig
from lmlab.errors import CheckpointError, ConfigError

SCHEDULES = ("cosine", "noam", "constant")
OPTIMIZERS = ("adamw", "adam")
PRECISIONS = ("auto", "bf16", "fp32")
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class Task(Protocol):
    """What the Trainer trains (see docs/architecture.md)."""

    def batch(self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int | torch.Tensor]: ...

    def evaluate(self, model: torch.nn.Module, max_batches: int = 0) -> dict[str, float]: ...


# --------------------------------------------------------------------------------------------------
# learning-rate schedules (pure functions)


def cosine_lr(step: int, max_steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to ``min_lr`` at ``max_steps``.

    ``step`` is the 0-based index of the update: step 0 gets ``lr / warmup``, step ``warmup - 1``
    gets ``lr``; from ``max_steps`` on the rate is ``min_lr``.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    progress = (step - warmup) / max(1, max_steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def noam_lr(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """Vaswani et al.: ``scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``, step from 1.

    The peak, ``scale * (d_model * warmup)^-0.5``, is reached at ``step == warmup``.
    """
    step = max(step, 1)
    factor = step**-0.5 if warmup <= 0 else min(step**-0.5, step * warmup**-1.5)
    return scale * d_model**-0.5 * factor


def learning_rate(cfg: TrainConfig, step: int, d_model: int | None = None) -> float:
    """The rate for the 0-based update ``step`` under ``cfg.schedule``."""
    if cfg.schedule == "cosine":
        return cosine_lr(step, cfg.max_steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
    if cfg.schedule == "noam":
        if not d_model:
            raise ConfigError("train.schedule='noam' needs the model width (model.config.d_model or n_embd)")
        return noam_lr(step + 1, d_model, cfg.warmup_steps, cfg.lr)
    if cfg.schedule == "constant":
        return cfg.lr
    raise ConfigError(f"unknown train.schedule '{cfg.schedule}'; valid: {', '.join(SCHEDULES)}")


# --------------------------------------------------------------------------------------------------
# device, precision, optimizer


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> cuda if available else cpu; under DDP on CUDA, cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device '{name}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device='{name}' but CUDA is not available (use train.device=cpu)")
        if local_rank is not None:
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AMX or AVX512-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in text or "avx512_bf16" in text


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the hardware has fast bf16 matmuls, else 'fp32'."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown train.precision '{name}'; valid: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW/Adam with weight decay on matrices (dim >= 2) only; fused kernels where supported.

    For 'adam' the decay is torch's (L2, coupled); for 'adamw' it is decoupled.
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown train.optimizer '{cfg.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
    try:
        return cls(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, **kwargs)


def _to_device(obj: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------------
# metrics file and plot


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (unparseable lines, e.g. a torn last line, skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def plot_losses(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write a PNG of train loss and val loss against step (log y-axis when the range is wide)."""
    from matplotlib.figure import Figure  # no pyplot: never touches the global backend

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
        pts = [(s, v) for s, v in pts if math.isfinite(v)]
        return [s for s, _ in pts], [v for _, v in pts]

    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    values: list[float] = []
    for key, label, style in (("loss", "train loss", "-"), ("val_loss", "val loss", "o-")):
        steps, vals = series(key)
        if steps:
            ax.plot(steps, vals, style, label=label, markersize=3)
            values += vals
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if values:
        ax.legend()
        if min(values) > 0 and max(values) / min(values) > 4:
            ax.set_yscale("log")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# the Trainer


class Trainer:
    """Trains ``model`` on ``task`` under ``cfg``, writing checkpoints/metrics/plot to ``run_dir``.

    The caller seeds (``torch.manual_seed``) before building the model so its initialisation is
    reproducible; the Trainer seeds again with ``cfg.seed + rank`` for dropout. If ``run_dir`` holds
    a checkpoint, the model weights, optimizer, step and RNG states are restored from the newest
    valid one, so training continues exactly where it stopped. ``extra_state`` (any picklable dict)
    is stored in every checkpoint; on resume the stored one is in ``trainer.resumed_state["extra"]``.

    Launched by torchrun with WORLD_SIZE > 1, it initialises the process group and trains with DDP;
    only rank 0 writes files.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        cfg: TrainConfig,
        run_dir: str | Path,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.run_dir = Path(run_dir)
        self.extra_state = dict(extra_state or {})
        _validate(cfg)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)

        # Distributed setup (torchrun sets WORLD_SIZE, RANK, LOCAL_RANK).
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.ddp = self.world > 1
        self.device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")) if self.ddp else None)
        self._owns_process_group = False
        if self.ddp:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
                self._owns_process_group = True
        self.is_main = self.rank == 0
        if cfg.batch_size % (cfg.grad_accum * self.world):
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} must be divisible by train.grad_accum * world size "
                f"= {cfg.grad_accum} * {self.world}"
            )
        self.precision = resolve_precision(cfg.precision, self.device)

        torch.manual_seed(cfg.seed + self.rank)
        self.raw_model = unwrap_model(model).to(self.device)
        conf = getattr(self.raw_model, "config", None)
        self.d_model: int | None = getattr(conf, "d_model", None) or getattr(conf, "n_embd", None)
        learning_rate(cfg, 0, self.d_model)  # fail early on a bad schedule
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.raw_model, cfg)

        self.step = 0
        self.elapsed = 0.0  # training seconds, excluding evaluation and checkpointing
        self.history: list[dict[str, Any]] = []
        self.resumed_from: Path | None = None
        self.resumed_state: dict[str, Any] | None = None
        self._last_ckpt_step: int | None = None
        self._stop_requested = False
        self._updating = False
        self._interrupt_handled = False
        self._pbar: Any = None
        self._seg_start = 0.0
        self._interval_time = 0.0

        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            if not self.is_main:
                warnings.simplefilter("ignore")
            ckpt = latest_checkpoint(self.run_dir)
        if ckpt is not None:
            self._resume(ckpt)
        if self.is_main:
            self._trim_metrics()

        module: torch.nn.Module = self.raw_model
        if cfg.compile:
            module = torch.compile(module)
        self.eval_model = module
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=device_ids)
        self.model = module

    # -- resume ------------------------------------------------------------------------------------

    def _resume(self, ckpt: Path) -> None:
        load_model_weights(ckpt, self.raw_model)
        state = load_trainer_state(ckpt)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"{ckpt}: optimizer state does not match the model or train.optimizer ({e})"
            ) from None
        for group in self.optimizer.param_groups:  # the current config's hyperparameters win
            group["betas"] = (self.cfg.beta1, self.cfg.beta2)
            group["eps"] = self.cfg.eps
            group["weight_decay"] = self.cfg.weight_decay if group["params"][0].dim() >= 2 else 0.0
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self._set_rng_state(state.get("rng"))
        self.resumed_from = ckpt
        self.resumed_state = state
        self._last_ckpt_step = self.step
        if self.is_main:
            # Checkpoints newer than the one used are corrupt (latest_checkpoint skipped them):
            # move them aside so they are neither retried nor kept instead of good ones.
            for newer in list_checkpoints(self.run_dir):
                if checkpoint_step(newer) > self.step:
                    newer.rename(newer.with_name(newer.name + ".corrupt"))
            self._say(f"resuming from {ckpt} (step {self.step})")

    def _trim_metrics(self) -> None:
        """Keep metrics.jsonl lines up to the resumed step (later ones were never checkpointed)."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept, records = [], []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= self.step:
                kept.append(line)
                records.append(rec)
        self.history = records
        if len(kept) != len(lines):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    # -- RNG ---------------------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }

    def _set_rng_state(self, states: list[dict[str, Any]] | None) -> None:
        """Restore this rank's RNG states (saved per rank); reseed if the world size grew."""
        if not states or self.rank >= len(states):
            torch.manual_seed(self.cfg.seed + self.rank + 1_000_003 * self.step)
            return
        s = states[self.rank]
        torch.set_rng_state(s["torch"])
        if s.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["cuda"], self.device)
        random.setstate(s["python"])
        np.random.set_state(s["numpy"])

    # -- helpers -----------------------------------------------------------------------------------

    def _say(self, msg: str) -> None:
        if self.is_main:
            tqdm.write(msg, file=sys.stderr)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _pause_clock(self) -> None:
        now = time.perf_counter()
        self.elapsed += now - self._seg_start
        self._interval_time += now - self._seg_start
        self._seg_start = now

    def _resume_clock(self) -> None:
        self._seg_start = time.perf_counter()

    def evaluate(self) -> dict[str, Any]:
        """``task.evaluate`` in eval mode, without grad, under the training precision.

        The RNG states are saved and restored around it, so evaluating never changes training.
        """
        model = self.eval_model
        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [self.device.index] if self.device.type == "cuda" else []
        model.eval()
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast():
                out = self.task.evaluate(model, self.cfg.eval_batches)
        finally:
            model.train()
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    def save(self, collective: bool = True) -> Path | None:
        """Checkpoint the current step (rank 0 writes; with ``collective`` all ranks must call)."""
        rng = self._rng_state()
        states = [rng]
        if self.ddp and collective:
            states = [None] * self.world
            dist.all_gather_object(states, rng)
        if not self.is_main:
            return None
        state = {
            "version": 1,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng": states,
            "elapsed_s": self.elapsed,
            "world_size": self.world,
            "config": dataclasses.asdict(self.cfg),
            "extra": self.extra_state,
        }
        path = save_checkpoint(self.run_dir, self.step, self.raw_model, state, self.cfg.keep_checkpoints)
        self._last_ckpt_step = self.step
        self.plot()
        return path

    def plot(self) -> None:
        """Write run_dir/loss.png from the metrics so far (rank 0)."""
        if self.is_main and self.history:
            plot_losses(self.history, self.run_dir / PLOT_FILE)

    @contextlib.contextmanager
    def _graceful_interrupt(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, checkpoint, stop. Second: stop at once (single process)."""
        if self.ddp or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    # -- training ----------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train up to ``cfg.max_steps``; returns the last metrics record (with the final eval).

        On Ctrl-C a checkpoint of the current step is written (so the same command resumes) and
        KeyboardInterrupt is re-raised.
        """
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            self._say(f"already at step {self.step} >= train.max_steps={cfg.max_steps}: nothing to train")
            self._shutdown(ok=True)
            return dict(self.history[-1]) if self.history else {"step": self.step}
        n_params = sum(p.numel() for p in self.params)
        where = f"{self.device} x{self.world}" if self.ddp else str(self.device)
        self._say(f"training {n_params:,} parameters on {where} ({self.precision}) to step {cfg.max_steps}")
        self._pbar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (cfg.progress and self.is_main),
        )
        ok = False
        try:
            with self._graceful_interrupt():
                result = self._loop()
            ok = True
            return result
        except KeyboardInterrupt:
            self._on_interrupt()
            raise
        finally:
            self._shutdown(ok)

    def _loop(self) -> dict[str, Any]:
        cfg, task, model, opt = self.cfg, self.task, self.model, self.optimizer
        n_micro = cfg.grad_accum
        result: dict[str, Any] = {}
        pbar_step = self.step
        interval_tokens: int | torch.Tensor = 0
        grad_norm: torch.Tensor | None = None
        self._interval_time = 0.0
        model.train()
        self._resume_clock()
        while self.step < cfg.max_steps:
            step = self.step
            done = step + 1
            is_last = done == cfg.max_steps
            do_eval = is_last or (cfg.eval_interval > 0 and done % cfg.eval_interval == 0)
            do_log = do_eval or (cfg.log_interval > 0 and done % cfg.log_interval == 0)
            do_ckpt = is_last or (cfg.checkpoint_interval > 0 and done % cfg.checkpoint_interval == 0)

            lr = learning_rate(cfg, step, self.d_model)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss_sum: torch.Tensor | None = None
            for micro in range(n_micro):
                batch = _to_device(task.batch(step, micro, n_micro, self.rank, self.world, cfg.batch_size),
                                   self.device)
                sync = model.no_sync() if self.ddp and micro < n_micro - 1 else contextlib.nullcontext()
                with sync:
                    with self._autocast():
                        loss, n_tokens = task.loss(model, batch)
                    (loss / n_micro if n_micro > 1 else loss).backward()
                interval_tokens = interval_tokens + n_tokens
                if do_log:
                    loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            elif do_log:
                grads = [p.grad for p in self.params if p.grad is not None]
                grad_norm = torch.nn.utils.get_total_norm(grads)
            self._updating = True
            opt.step()
            self.step = done
            self._updating = False

            if do_log:
                assert loss_sum is not None and grad_norm is not None
                stats = torch.stack([
                    loss_sum.double() / n_micro,
                    grad_norm.double(),
                    torch.as_tensor(interval_tokens, dtype=torch.float64, device=self.device),
                ])
                if self.ddp:
                    dist.all_reduce(stats)
                    stats[:2] /= self.world
                loss_v, gnorm_v, tokens_v = stats.tolist()  # the one host sync of a logged step
                self._pause_clock()
                record = {
                    "step": self.step,
                    "loss": loss_v,
                    "lr": lr,
                    "tokens_per_s": tokens_v / max(self._interval_time, 1e-9),
                    "grad_norm": gnorm_v,
                    "elapsed_s": round(self.elapsed, 4),
                }
                interval_tokens, self._interval_time = 0, 0.0
                if do_eval:
                    record.update(self.evaluate())
                self._log(record)
                tok_s = f"{record['tokens_per_s']:,.0f}"
                self._pbar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", tok_s=tok_s, refresh=False)
                self._pbar.update(self.step - pbar_step)
                pbar_step = self.step
                result = record
            stop = self._stop_requested  # read once: Ctrl-C may arrive at any moment
            if do_ckpt or stop:
                if not do_log:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self._pause_clock()
                self.save()
            if stop:
                self._say(f"interrupted: saved a checkpoint at step {self.step}; "
                          "run the same command again to resume")
                self._interrupt_handled = True
                raise KeyboardInterrupt
            if do_log or do_ckpt:
                self._resume_clock()
        self._pbar.update(self.step - pbar_step)
        return result

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.is_main:
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _on_interrupt(self) -> None:
        if self._interrupt_handled:
            return
        self._interrupt_handled = True
        if self._updating:
            self._say("interrupted during an optimizer update: not saving; the last checkpoint is kept")
        elif self.step == 0 or self.step == self._last_ckpt_step:
            self._say(f"interrupted at step {self.step}: nothing new to save")
        else:
            path = self.save(collective=False)
            if path is not None:
                self._say(f"interrupted: saved {path}; run the same command again to resume")

    def _shutdown(self, ok: bool) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._owns_process_group and dist.is_initialized():
            if ok:
                dist.barrier()
            dist.destroy_process_group()
            self._owns_process_group = False


def _validate(cfg: TrainConfig) -> None:
    """Reject settings the Trainer cannot use, naming the key."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"unknown train.schedule '{cfg.schedule}'; valid: {', '.join(SCHEDULES)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown train.optimizer '{cfg.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown train.precision '{cfg.precision}'; valid: {', '.join(PRECISIONS)}")
    for key in ("batch_size", "grad_accum"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1 (got {getattr(cfg, key)})")
    if cfg.max_steps < 0:
        raise ConfigError(f"train.max_steps must be >= 0 (got {cfg.max_steps})")


__all__ = [
    "CHECKPOINTS_DIR",
    "METRICS_FILE",
    "PLOT_FILE",
    "Task",
    "Trainer",
    "build_optimizer",
    "cosine_lr",
    "learning_rate",
    "noam_lr",
    "plot_losses",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
]
