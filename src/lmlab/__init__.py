"""lmlab: build, train, evaluate and explain the lineage of language models on PyTorch."""

from lmlab.errors import LmlabError
from lmlab.pipeline import Pipeline, load

__version__ = "0.1.0"
__all__ = ["load", "Pipeline", "LmlabError", "__version__"]
