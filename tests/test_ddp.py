"""DDP on CPU (gloo): 2 processes x 2 micro-batches give the weights and logged losses of 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from lmlab.train import read_metrics

WORKER = Path(__file__).parent / "ddp_worker.py"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this PyTorch build",
)


def run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ddp_matches_single_process(tmp_path):
    run([str(WORKER), str(tmp_path / "single"), "1"])
    run(["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(WORKER),
         str(tmp_path / "ddp"), "2"])
    single = load_file(tmp_path / "single/checkpoints/step_00000005/model.safetensors")
    ddp = load_file(tmp_path / "ddp/checkpoints/step_00000005/model.safetensors")
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=0, msg=k)
    a, b = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], abs=1e-5)
    assert "val_loss" in b[-1]
