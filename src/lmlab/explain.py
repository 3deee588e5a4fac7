"""Pictures of what a model attends to (attention maps), saved as PNG."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError


def self_attention(
    pipeline: Any, text: str, layer: int = -1, head: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """(T, T) attention weights of ``layer`` (one head, or the mean over heads) and the token strings.

    The weights come from the model's eager attention path (``need_weights=True``), so this works
    whether the model was built with fused or eager attention. A text longer than the context is
    cut to its last ``block_size`` tokens, with a warning.
    """
    model, tok = pipeline.model, pipeline.tokenizer
    if not isinstance(text, str):
        raise LmlabError(f"the text must be a string, got {type(text).__name__}")
    block = int(model.config.block_size)
    ids = tok.encode(text)
    if not ids:
        raise LmlabError("the text is empty: give at least one character to draw attention over")
    if len(ids) > block:
        warnings.warn(
            f"the text has {len(ids)} tokens but the model's context is {block}: drawing the last {block}",
            UserWarning,
            stacklevel=2,
        )
        ids = ids[-block:]
    n_layer = getattr(model.config, "n_layer", None)
    if n_layer is not None and not -n_layer <= layer < n_layer:
        raise LmlabError(f"--layer {layer} out of range: the model has {n_layer} layers (0..{n_layer - 1})")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, attentions = model(torch.tensor([ids], device=pipeline.device), need_weights=True)
    finally:
        model.train(was_training)
    n_layer = len(attentions)
    if not -n_layer <= layer < n_layer:
        raise LmlabError(f"--layer {layer} out of range: the model has {n_layer} layers (0..{n_layer - 1})")
    att = attentions[layer][0]  # (H, T, T)
    if head is None:
        att = att.mean(0)
    else:
        if not 0 <= head < att.size(0):
            n_head = att.size(0)
            raise LmlabError(f"--head {head} out of range: the model has {n_head} heads (0..{n_head - 1})")
        att = att[head]
    labels = [tok.token_to_str(i) for i in ids]
    return att.float().cpu(), labels


def _check_image_path(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in formats:
        valid = ", ".join("." + f for f in formats)
        raise LmlabError(f"cannot write an image to '{path}': use one of the extensions {valid}")
    if path.exists() and path.is_dir():
        raise LmlabError(f"'{path}' is a directory: give an image file name such as map.png")


def plot_attention(
    weights: torch.Tensor,
    rows: list[str],
    cols: list[str],
    path: str | Path,
    title: str,
    xlabel: str = "attended-to token (key)",
    ylabel: str = "attending token (query)",
) -> Path:
    from matplotlib.figure import Figure

    path = Path(path)
    _check_image_path(path)
    width, height = (min(4 + 0.25 * n, 24) for n in (len(cols), len(rows)))  # square for self-attention
    fig = Figure(figsize=(width + 1, height) if width != height else (width, height))
    ax = fig.add_subplot()
    im = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(cols)), [repr(c)[1:-1] for c in cols], rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [repr(r)[1:-1] for r in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_self_attention(
    pipeline: Any, text: str, out: str | Path, layer: int = -1, head: int | None = None
) -> Path:
    """Draw ``self_attention(pipeline, text, layer, head)`` to the image file ``out``; returns its path."""
    _check_image_path(Path(out))  # before running the model
    weights, labels = self_attention(pipeline, text, layer, head)
    n_layer = getattr(pipeline.model.config, "n_layer", None)
    shown = layer % n_layer if n_layer else layer
    which = "mean over heads" if head is None else f"head {head}"
    return plot_attention(weights, labels, labels, out, f"self-attention, layer {shown}, {which}")


def cross_attention_shape(model: Any) -> tuple[int, int]:
    """(layers, heads) of an encoder-decoder's attention over the source: the Transformer's decoder
    layers x heads, or what the model declares (``model.cross_attention_shape``: the RNN seq2seq
    model has one map with one head, or none at all)."""
    shape = getattr(model, "cross_attention_shape", None)
    if shape is not None:
        return int(shape[0]), int(shape[1])
    return int(model.config.n_decoder_layers), int(model.config.n_heads)


def cross_attention(
    pipeline: Any, text: str, layer: int = -1, head: int | None = None, beam: int = 4
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Encoder-decoder attention of a translation run: (T, S) weights of decoder ``layer`` (one
    head, or the mean over heads), the generated target tokens (rows, ending with ``</s>``) and the
    source tokens (columns, ending with ``</s>``).

    ``text`` is translated with ``pipeline.translate`` (beam search, ``beam`` beams), then the
    translation is fed back through the decoder with ``need_weights=True``: row t is the attention
    of the step that produced target token t (no ``</s>`` row when the search stopped at its
    length limit before producing EOS).
    """
    if not isinstance(text, str):
        raise LmlabError(f"the text must be a string, got {type(text).__name__}")
    model, toks = pipeline.model, pipeline.tokenizers
    src = pipeline.encode_sources([text])[0]
    if not src:
        raise LmlabError("the text is empty: give a sentence to translate")
    n_layer, n_head = cross_attention_shape(model)
    if n_layer == 0:
        raise LmlabError(
            "this model has no attention over the source (a fixed context vector, model.attention=none): "
            "there is no map to draw"
        )
    if not -n_layer <= layer < n_layer:
        raise LmlabError(
            f"--layer {layer} out of range: the decoder has {n_layer} layers with cross-attention "
            f"(0..{n_layer - 1})"
        )
    if head is not None and not 0 <= head < n_head:
        raise LmlabError(f"--head {head} out of range: the model has {n_head} heads (0..{n_head - 1})")
    hyp = pipeline.translate_ids([text], beam=beam)[0]
    # the search's limit (translate_ids' default): a shorter hypothesis ended with EOS
    finished = len(hyp) < min(int(model.config.max_len), len(src) + 1 + 50)
    fed = hyp if finished else hyp[:-1]  # BOS + fed: one position per generated token
    sp, tp = toks.src_special, toks.tgt_special
    device = pipeline.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            src_t = torch.tensor([src + [sp.eos]], device=device)
            tgt_t = torch.tensor([[tp.bos] + fed], device=device)
            memory = model.encode(src_t)
            _, weights = model.decode(tgt_t, memory, need_weights=True)
    finally:
        model.train(was_training)
    att = weights["cross"][layer][0]  # (H, T, S)
    att = att.mean(0) if head is None else att[head]
    rows = [toks.tgt.token_to_str(i) for i in hyp] + (["</s>"] if finished else [])
    cols = [toks.src.token_to_str(i) for i in src] + ["</s>"]
    return att.float().cpu(), rows, cols


def plot_cross_attention(
    pipeline: Any, text: str, out: str | Path, layer: int = -1, head: int | None = None, beam: int = 4
) -> Path:
    """Draw ``cross_attention(pipeline, text, layer, head)`` (source tokens across, generated target
    tokens down) to the image file ``out``; returns its path."""
    _check_image_path(Path(out))  # before running the model
    weights, rows, cols = cross_attention(pipeline, text, layer, head, beam)
    shown = layer % max(cross_attention_shape(pipeline.model)[0], 1)
    which = "mean over heads" if head is None else f"head {head}"
    return plot_attention(
        weights, rows, cols, out, f"cross-attention, decoder layer {shown}, {which}",
        xlabel="source token", ylabel="generated target token",
    )
