"""lmlab: build, train, evaluate and explain the lineage of language models on PyTorch.

``lmlab.load(path)`` gives back a trained run (or a Hugging Face directory) ready to generate.
Heavy imports (torch) happen on first use, so ``lmlab recipes`` stays quick.
"""

from typing import Any

from lmlab.errors import LmlabError

__version__ = "0.1.0"
__all__ = ["load", "Pipeline", "LmlabError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Pipeline"):
        from lmlab import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
