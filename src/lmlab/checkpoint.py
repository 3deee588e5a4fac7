"""Atomic checkpoints: save, list, validate and load.

Layout (``RUN_DIR/checkpoints/step_00000200/``)::

    model.safetensors   the unwrapped model's weights (tied weights stored once)
    trainer_state.pt    torch.save'd dict: optimizer, step, RNG states, train config, extra state

A checkpoint is written to ``step_N.tmp/``, fsynced and renamed to ``step_N/``, so a crash never
leaves a half-written checkpoint under a final name. ``latest_checkpoint`` skips (and names) any
checkpoint whose files are truncated or corrupt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model

from lmlab.errors import CheckpointError

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"

_STEP_RE = re.compile(r"^step_(\d+)$")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def checkpoint_step(ckpt_dir: str | Path) -> int:
    """The step number encoded in a checkpoint directory's name (``step_00000200`` -> 200)."""
    m = _STEP_RE.match(Path(ckpt_dir).name)
    if not m:
        raise CheckpointError(
            f"{ckpt_dir} is not a checkpoint directory (expected a name like step_00000200)"
        )
    return int(m.group(1))


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories: best effort, not supported everywhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Atomically write ``run_dir/checkpoints/step_{step:08d}/`` and keep only the ``keep`` newest.

    The model may be wrapped in DDP or torch.compile; the plain module's weights are saved.
    Returns the checkpoint directory. An existing checkpoint of the same step is replaced.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    model_path = tmp / MODEL_FILE
    state_path = tmp / STATE_FILE
    save_model(unwrap_model(model), str(model_path), metadata={"step": str(step)})
    torch.save(trainer_state, state_path)
    _fsync(model_path)
    _fsync(state_path)
    _fsync(tmp)

    old = None
    if final.exists():  # re-saving a step (e.g. interrupted right after a checkpoint): swap it out
        old = root / f"step_{step:08d}.old"
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

    # Prune: older checkpoints beyond `keep`, and leftovers of interrupted saves.
    keep = max(1, keep)
    others = [c for c in list_checkpoints(run_dir) if c != final]
    for c in others[: max(0, len(others) - (keep - 1))]:
        shutil.rmtree(c, ignore_errors=True)
    for leftover in root.glob("step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories (``step_N``, not ``step_N.tmp``), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _check_safetensors(path: Path) -> None:
    """Cheap integrity check: the header parses and the file is exactly as long as it says."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + header_len + end:
            raise ValueError(f"file is {size} bytes, header says {8 + header_len + end}")
        with safe_open(str(path), framework="pt"):
            pass
    except CheckpointError:
        raise
    except Exception as e:  # struct.error, JSONDecodeError, SafetensorError, KeyError, ...
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None


def load_model_weights(ckpt_dir: str | Path, model: torch.nn.Module) -> None:
    """Load ``ckpt_dir/model.safetensors`` into ``model`` (wrappers are unwrapped), strictly.

    Raises CheckpointError naming the file when it is missing, truncated or corrupt, or when its
    tensors do not match the model's (names or shapes).
    """
    path = Path(ckpt_dir) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None
    load_model_state(model, state, path)


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a weights dict (as stored in ``model.safetensors``: tied weights once) into ``model``,
    strictly; ``path`` names where the weights came from in the CheckpointError of a mismatch."""
    module = unwrap_model(model)
    expected = {k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    # Tied weights are stored once (save_model drops duplicates): a key missing from the file is fine
    # when another key sharing its storage was loaded.
    def where(t: torch.Tensor) -> tuple:
        return t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)

    loaded = {where(expected[k]) for k in state if k in expected}
    missing = [k for k in expected if k not in state and where(expected[k]) not in loaded]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise CheckpointError(
            f"{path} does not match the model; {'; '.join(parts)}. Checkpoint of a different model/config?"
        )
    module.load_state_dict(state, strict=False)


def average_checkpoints(
    run_dir: str | Path, k: int, upto: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights of the last ``k`` complete checkpoints of ``run_dir``
    (Vaswani et al. average the last 5, written at 10-minute intervals), as a state dict to load
    with ``load_model_state``. ``upto``: a checkpoint directory to end with (default: the newest).

    Corrupt checkpoints are skipped with a warning. Fewer than ``k`` usable checkpoints is a
    CheckpointError saying how many there are (keep more with ``train.keep_checkpoints``).
    """
    return average_weights(checkpoints_to_average(run_dir, k, upto))


def checkpoints_to_average(run_dir: str | Path, k: int, upto: str | Path | None = None) -> list[Path]:
    """The checkpoint directories ``average_checkpoints`` uses, oldest first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CheckpointError(f"the number of checkpoints to average must be an integer >= 1, got {k!r}")
    ckpts = list_checkpoints(run_dir)
    if upto is not None:
        last = checkpoint_step(upto)
        ckpts = [c for c in ckpts if checkpoint_step(c) <= last]
    chosen: list[Path] = []
    for ckpt in reversed(ckpts):
        try:
            _check_safetensors(ckpt / MODEL_FILE)
        except CheckpointError as e:
            warnings.warn(f"checkpoint {ckpt} is corrupt ({e}); not averaging it", stacklevel=3)
            continue
        chosen.append(ckpt)
        if len(chosen) == k:
            break
    if len(chosen) < k:
        steps = ", ".join(c.name for c in reversed(chosen)) or "none"
        raise CheckpointError(
            f"cannot average the last {k} checkpoints: {Path(run_dir) / CHECKPOINTS_DIR} holds "
            f"{len(chosen)} usable ({steps}). Train with train.keep_checkpoints={k} and a "
            "train.checkpoint_interval to keep more, or average fewer"
        )
    return chosen[::-1]


def average_weights(ckpts: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of the weights of checkpoint directories ``ckpts``, summed in float64 one at a time."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for ckpt in ckpts:
        path = ckpt / MODEL_FILE
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None
        same = state.keys() == total.keys() and all(state[n].shape == t.shape for n, t in total.items())
        if total and not same:
            raise CheckpointError(
                f"{path} holds other tensors than {ckpts[0] / MODEL_FILE} (a changed model?)"
            )
        for name, t in state.items():
            if not t.is_floating_point():
                total[name] = t  # integer buffers: the newest
            elif name in total:
                total[name] += t.double()
            else:
                dtypes[name] = t.dtype
                total[name] = t.double()
    return {n: (t / len(ckpts)).to(dtypes[n]) if n in dtypes else t for n, t in total.items()}


def load_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """Read ``ckpt_dir/trainer_state.pt`` (our own file; it holds RNG states, so not weights-only)."""
    path = Path(ckpt_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"trainer state not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a trainer state (expected a dict, got {type(state).__name__})")
    return state


def validate_checkpoint(ckpt_dir: str | Path) -> None:
    """Raise CheckpointError (naming the file) unless both checkpoint files open cleanly."""
    ckpt_dir = Path(ckpt_dir)
    _check_safetensors(ckpt_dir / MODEL_FILE)
    path = ckpt_dir / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:  # mmap: reads the zip directory and the pickle, not every tensor
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None


def latest_checkpoint(run_dir: str | Path, validate: bool = True) -> Path | None:
    """The newest complete checkpoint whose files open cleanly, or None when there is none.

    Corrupt newer checkpoints are skipped with a warning naming them. Raises CheckpointError when
    checkpoints exist but every one of them is corrupt (rather than silently starting over).
    """
    ckpts = list_checkpoints(run_dir)
    if not validate:
        return ckpts[-1] if ckpts else None
    bad: list[tuple[Path, str]] = []
    for ckpt in reversed(ckpts):
        try:
            validate_checkpoint(ckpt)
        except CheckpointError as e:
            bad.append((ckpt, str(e)))
            continue
        for b, why in bad:
            warnings.warn(f"checkpoint {b} is corrupt ({why}); using {ckpt}", stacklevel=2)
        return ckpt
    if bad:
        details = "; ".join(why for _, why in bad)
        raise CheckpointError(
            f"every checkpoint in {Path(run_dir) / CHECKPOINTS_DIR} is corrupt: {details}. "
            "Delete them to start over."
        )
    return None
