"""Tasks: what the Trainer trains (data + loss + evaluation)."""

from lmlab.tasks.lm import LMTask, evaluate_lm, lm_loss
from lmlab.tasks.mlm import MLMTask
from lmlab.tasks.translation import TranslationTask, label_smoothed_nll

__all__ = ["LMTask", "evaluate_lm", "lm_loss", "MLMTask", "TranslationTask", "label_smoothed_nll"]
