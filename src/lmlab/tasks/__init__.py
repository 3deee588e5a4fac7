"""Tasks: what the Trainer trains (data + loss + evaluation)."""

from lmlab.tasks.lm import LMTask, evaluate_lm, lm_loss

__all__ = ["LMTask", "evaluate_lm", "lm_loss"]
