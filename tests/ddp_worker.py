"""Train the tiny test model for a few steps; run plainly or under torchrun (test_ddp.py).

Usage: python tests/ddp_worker.py RUN_DIR GRAD_ACCUM
The final weights land in RUN_DIR/checkpoints/step_00000005/model.safetensors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from lmlab.train import Trainer  # noqa: E402
from test_train import TinyLM, TinyTask, make_cfg  # noqa: E402


def main() -> None:
    run_dir, grad_accum = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(123)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    cfg = make_cfg(max_steps=5, batch_size=8, grad_accum=grad_accum, schedule="cosine", weight_decay=0.1)
    Trainer(TinyLM(), TinyTask(), cfg, run_dir).fit()


if __name__ == "__main__":
    main()
