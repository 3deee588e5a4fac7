"""Trainer and checkpoints, on a tiny model and a tiny Task defined here (also used by ddp_worker.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lmlab.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_trainer_state,
    save_checkpoint,
)
from lmlab.config import TrainConfig
from lmlab.errors import CheckpointError, ConfigError
from lmlab.train import Trainer, cosine_lr, learning_rate, noam_lr, read_metrics

VOCAB, T = 16, 8


@dataclass
class TinyConfig:
    n_embd: int = 8


class TinyLM(torch.nn.Module):
    """Embedding -> (dropout) -> MLP -> tied output layer: enough to exercise the Trainer."""

    def __init__(self, dropout: float = 0.0, n_embd: int = 8) -> None:
        super().__init__()
        self.config = TinyConfig(n_embd)
        self.wte = torch.nn.Embedding(VOCAB, n_embd)
        self.drop = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(n_embd, n_embd)
        self.norm = torch.nn.LayerNorm(n_embd)
        self.head = torch.nn.Linear(n_embd, VOCAB, bias=False)
        self.head.weight = self.wte.weight  # tied

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.wte(idx))
        return self.head(self.norm(h + torch.tanh(self.fc(h))))


class TinyTask:
    """Deterministic batches: rows of a fixed random token tensor chosen by a step-seeded generator."""

    def __init__(self, fail_at: int | None = None, sigint_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.train = torch.randint(0, VOCAB, (64, T + 1), generator=g)
        self.val = torch.randint(0, VOCAB, (16, T + 1), generator=g)
        self.fail_at, self.sigint_at = fail_at, sigint_at

    def batch(self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int):
        if step == self.fail_at:
            raise KeyboardInterrupt
        if step == self.sigint_at and micro == 0:
            os.kill(os.getpid(), signal.SIGINT)
        rows = torch.randint(0, len(self.train), (batch_size,), generator=torch.Generator().manual_seed(step))
        per = batch_size // (n_micro * world)
        part = rank * n_micro + micro
        seqs = self.train[rows[part * per : (part + 1) * per]]
        return seqs[:, :-1], seqs[:, 1:]

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()), y.numel()

    def evaluate(self, model, max_batches: int = 0):
        torch.rand(3)  # consumes RNG on purpose: the Trainer must shield training from it
        x, y = self.val[:, :-1], self.val[:, 1:]
        return {"val_loss": F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()).item()}


def make_cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=6, batch_size=8, lr=1e-2, min_lr=1e-3, warmup_steps=2, device="cpu",
        precision="fp32", progress=False, log_interval=1, seed=0, threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def train(run_dir: Path, dropout: float = 0.0, task: TinyTask | None = None, **kw) -> Trainer:
    torch.manual_seed(123)
    trainer = Trainer(TinyLM(dropout), task or TinyTask(), make_cfg(**kw), run_dir)
    trainer.fit()
    return trainer


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------
# schedules


def test_cosine_schedule_endpoints():
    lr, min_lr = 1e-3, 1e-4
    assert cosine_lr(0, 100, lr, min_lr, 10) == pytest.approx(lr / 10)
    assert cosine_lr(9, 100, lr, min_lr, 10) == pytest.approx(lr)
    assert cosine_lr(10, 100, lr, min_lr, 10) == pytest.approx(lr)
    assert cosine_lr(55, 100, lr, min_lr, 10) == pytest.approx((lr + min_lr) / 2)
    assert cosine_lr(100, 100, lr, min_lr, 10) == pytest.approx(min_lr)
    assert cosine_lr(500, 100, lr, min_lr, 10) == pytest.approx(min_lr)
    values = [cosine_lr(s, 100, lr, min_lr, 10) for s in range(101)]
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert cosine_lr(0, 100, lr, min_lr, 0) == pytest.approx(lr)


def test_noam_schedule_peaks_at_warmup():
    d, w = 512, 4000
    values = [noam_lr(s, d, w) for s in range(1, 20001)]
    peak = max(range(len(values)), key=values.__getitem__) + 1
    assert peak == w
    assert noam_lr(w, d, w) == pytest.approx((d * w) ** -0.5)
    assert noam_lr(w, d, w, scale=2.0) == pytest.approx(2 * (d * w) ** -0.5)
    assert noam_lr(0, d, w) == noam_lr(1, d, w)  # step counted from 1


def test_schedule_dispatch_and_errors():
    assert learning_rate(make_cfg(schedule="constant"), 3) == 1e-2
    assert learning_rate(make_cfg(schedule="noam", warmup_steps=4, lr=1.0), 3, d_model=16) == pytest.approx(
        noam_lr(4, 16, 4)
    )
    with pytest.raises(ConfigError, match="schedule"):
        Trainer(TinyLM(), TinyTask(), make_cfg(schedule="linear"), "unused")
    with pytest.raises(ConfigError, match="optimizer"):
        Trainer(TinyLM(), TinyTask(), make_cfg(optimizer="sgd"), "unused")
    with pytest.raises(ConfigError, match="divisible"):
        Trainer(TinyLM(), TinyTask(), make_cfg(batch_size=6, grad_accum=4), "unused")


def test_optimizer_decays_matrices_only(tmp_path):
    trainer = Trainer(TinyLM(), TinyTask(), make_cfg(weight_decay=0.5), tmp_path)
    decay = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] == 0.5 for p in g["params"]}
    model = trainer.raw_model
    assert decay == {id(model.wte.weight), id(model.fc.weight)}
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(list(model.parameters()))


# --------------------------------------------------------------------------------------------------
# training


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # eps=1e-3 keeps Adam's first step g / (|g| + eps) well conditioned for near-zero gradients.
    kw = dict(max_steps=2, batch_size=8, eps=1e-3, schedule="constant")
    big = train(tmp_path / "big", grad_accum=1, **kw)
    acc = train(tmp_path / "acc", grad_accum=4, **kw)
    for (k, a), b in zip(weights(big).items(), weights(acc).values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    a, b = losses(tmp_path / "big"), losses(tmp_path / "acc")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2]
    assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_is_exact(tmp_path, dropout):
    kw = dict(schedule="constant", checkpoint_interval=2, eval_interval=3)
    straight = train(tmp_path / "a", dropout, max_steps=6, **kw)
    train(tmp_path / "b", dropout, max_steps=3, **kw)
    resumed = train(tmp_path / "b", dropout, max_steps=6, **kw)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == "step_00000003"
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(weights(straight), weights(resumed))


def test_resume_after_interrupt_is_exact(tmp_path):
    kw = dict(max_steps=6, schedule="cosine", checkpoint_interval=0)
    straight = train(tmp_path / "a", 0.3, **kw)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", 0.3, task=TinyTask(fail_at=4), **kw)
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step_00000004"]
    resumed = train(tmp_path / "b", 0.3, **kw)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert_same_weights(weights(straight), weights(resumed))


def test_first_ctrl_c_finishes_the_step_and_checkpoints(tmp_path):
    kw = dict(max_steps=6, schedule="cosine", log_interval=2)
    straight = train(tmp_path / "a", 0.3, **kw)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", 0.3, task=TinyTask(sigint_at=2), **kw)
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step_00000003"]
    assert signal.getsignal(signal.SIGINT) is before
    resumed = train(tmp_path / "b", 0.3, **kw)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert_same_weights(weights(straight), weights(resumed))


def test_resume_drops_metrics_after_checkpoint(tmp_path):
    train(tmp_path, max_steps=4, checkpoint_interval=2, keep_checkpoints=1)
    ckpt = latest_checkpoint(tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 9.0}) + "\n")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn last line
    assert ckpt is not None and ckpt.name == "step_00000004"
    trainer = Trainer(TinyLM(), TinyTask(), make_cfg(max_steps=5), tmp_path)
    assert trainer.step == 4
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    trainer.fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    # already finished: fit() does nothing and returns the last record
    again = Trainer(TinyLM(), TinyTask(), make_cfg(max_steps=5), tmp_path)
    assert again.fit()["step"] == 5
    assert len(read_metrics(tmp_path)) == 5


def test_metrics_and_plot(tmp_path):
    trainer = Trainer(TinyLM(), TinyTask(), make_cfg(max_steps=7, log_interval=2, eval_interval=3), tmp_path,
                      extra_state={"family": "tiny"})
    final = trainer.fit()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [2, 3, 4, 6, 7]
    for r in records:
        assert {"step", "loss", "lr", "tokens_per_s", "grad_norm", "elapsed_s"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["grad_norm"] > 0
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6, 7]
    assert final == records[-1] and "val_loss" in final
    assert records[-1]["elapsed_s"] >= records[0]["elapsed_s"]
    assert (tmp_path / "loss.png").stat().st_size > 1000
    state = load_trainer_state(latest_checkpoint(tmp_path))
    assert state["step"] == 7 and state["extra"] == {"family": "tiny"} and state["config"]["max_steps"] == 7


def test_bf16_autocast_runs(tmp_path):
    trainer = train(tmp_path, max_steps=2, precision="bf16", grad_clip=0.0)
    assert trainer.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())  # fp32 master weights
    assert "grad_norm" in read_metrics(tmp_path)[-1]


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_roundtrip_keeps_tied_weights_and_prunes(tmp_path):
    model = TinyLM()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {"step": step}, keep=2)
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    other = TinyLM()
    load_model_weights(tmp_path / "checkpoints" / "step_00000003", other)
    assert other.head.weight is other.wte.weight
    assert_same_weights(model.state_dict(), other.state_dict())
    assert load_trainer_state(tmp_path / "checkpoints" / "step_00000003") == {"step": 3}


def test_checkpoint_of_a_different_model_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path, 1, TinyLM(n_embd=8), {}, keep=1)
    with pytest.raises(CheckpointError, match="different model/config") as err:
        load_model_weights(path, TinyLM(n_embd=4))
    assert "model.safetensors" in str(err.value) and "fc.weight (file (8, 8), model (4, 4))" in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_model_weights(tmp_path, TinyLM())


def test_tmp_and_corrupt_checkpoints_are_skipped(tmp_path):
    train(tmp_path, max_steps=3, checkpoint_interval=1, keep_checkpoints=3)
    root = tmp_path / "checkpoints"
    (root / "step_00000009.tmp").mkdir()
    (root / "step_00000009.tmp" / "model.safetensors").write_bytes(b"partial")
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002", "step_00000003"]
    assert latest_checkpoint(tmp_path) == root / "step_00000003"

    newest = root / "step_00000003" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=r"step_00000003.*corrupt.*using .*step_00000002"):
        assert latest_checkpoint(tmp_path) == root / "step_00000002"
    with pytest.raises(CheckpointError, match=r"step_00000003/model\.safetensors"):
        load_model_weights(root / "step_00000003", TinyLM())

    state = root / "step_00000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.warns(UserWarning) as caught:
        assert latest_checkpoint(tmp_path) == root / "step_00000001"
    assert sorted(str(w.message).split()[1][-13:] for w in caught) == ["step_00000002", "step_00000003"]
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt"):
        load_trainer_state(root / "step_00000002")

    # a Trainer resumes from the newest valid one and moves the corrupt ones aside
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(TinyLM(), TinyTask(), make_cfg(max_steps=3), tmp_path)
    assert trainer.step == 1
    assert sorted(p.name for p in root.iterdir()) == [
        "step_00000001", "step_00000002.corrupt", "step_00000003.corrupt", "step_00000009.tmp"
    ]
    trainer.fit()
    assert latest_checkpoint(tmp_path) == root / "step_00000003"

    for ckpt in list_checkpoints(tmp_path):
        (ckpt / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="every checkpoint"):
        latest_checkpoint(tmp_path)


class FakeCompiled(torch.nn.Module):
    """What torch.compile returns, minus the import cost: the module is in ``_orig_mod``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def test_saved_weights_are_the_unwrapped_module(tmp_path):
    model = TinyLM()
    path = save_checkpoint(tmp_path, 5, FakeCompiled(model), {}, keep=1)
    assert set(load_file(path / "model.safetensors")) <= set(model.state_dict())
    other = TinyLM(n_embd=8)
    load_model_weights(path, FakeCompiled(other))
    assert_same_weights(model.state_dict(), other.state_dict())
