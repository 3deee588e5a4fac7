"""Pictures of what a model attends to (attention maps), saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError


def self_attention(pipeline: Any, text: str, layer: int = -1, head: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """(T, T) attention weights of ``layer`` (one head, or the mean over heads) and the token strings."""
    model, tok = pipeline.model, pipeline.tokenizer
    ids = tok.encode(text)[-model.config.block_size :]
    if not ids:
        raise LmlabError("the text is empty")
    with torch.no_grad():
        _, attentions = model(torch.tensor([ids], device=pipeline.device), need_weights=True)
    n_layer = len(attentions)
    if not -n_layer <= layer < n_layer:
        raise LmlabError(f"--layer {layer} out of range: the model has {n_layer} layers")
    att = attentions[layer][0]  # (H, T, T)
    if head is None:
        att = att.mean(0)
    else:
        if not 0 <= head < att.size(0):
            raise LmlabError(f"--head {head} out of range: the model has {att.size(0)} heads")
        att = att[head]
    labels = [tok.token_to_str(i) for i in ids]
    return att.float().cpu(), labels


def plot_attention(weights: torch.Tensor, rows: list[str], cols: list[str], path: str | Path, title: str) -> Path:
    from matplotlib.figure import Figure

    n = max(len(rows), len(cols))
    size = min(4 + 0.25 * n, 24)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    im = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(cols)), [repr(c)[1:-1] for c in cols], rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [repr(r)[1:-1] for r in rows], fontsize=8)
    ax.set_xlabel("attended-to token (key)")
    ax.set_ylabel("attending token (query)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_self_attention(pipeline: Any, text: str, out: str | Path, layer: int = -1, head: int | None = None) -> Path:
    weights, labels = self_attention(pipeline, text, layer, head)
    which = "mean over heads" if head is None else f"head {head}"
    return plot_attention(weights, labels, labels, out, f"self-attention, layer {layer}, {which}")
