"""BERT in the Hugging Face layout <-> lmlab's Bert and its heads: config, weights and tokenizer.

A Hugging Face BERT directory holds ``config.json`` (``model_type: bert``), the weights
(``model.safetensors``, sharded safetensors, or a ``pytorch_model.bin``, read as the GPT-2 importer
reads them) and a WordPiece tokenizer (``tokenizer.json``, or the older ``vocab.txt`` with
``tokenizer_config.json``'s ``do_lower_case``). HF's BERT is lmlab's post-LN encoder, so the conversion
is a renaming, except that the separate query/key/value projections are stacked into one:

    HF (BertModel keys; BertFor* prefix them with ``bert.``)   lmlab (Bert; in the heads, under ``bert.``)
    embeddings.word_embeddings.weight                           tok_emb.weight
    embeddings.position_embeddings.weight                       pos_emb.weight
    embeddings.token_type_embeddings.weight                     type_emb.weight
    embeddings.LayerNorm.{weight,bias}                          emb_norm.{weight,bias}
    encoder.layer.N.attention.self.{query,key,value}.*          blocks.N.self_attn.in_proj.*  = cat(q, k, v)
    encoder.layer.N.attention.output.dense.*                    blocks.N.self_attn.out_proj.*
    encoder.layer.N.attention.output.LayerNorm.*                blocks.N.norm1.*
    encoder.layer.N.intermediate.dense.*                        blocks.N.ffn.fc1.*
    encoder.layer.N.output.dense.*                              blocks.N.ffn.fc2.*
    encoder.layer.N.output.LayerNorm.*                          blocks.N.norm2.*
    pooler.dense.*                                              pooler.*
    cls.predictions.transform.dense.*                           mlm.transform.*
    cls.predictions.transform.LayerNorm.*                       mlm.norm.*
    cls.predictions.bias (= cls.predictions.decoder.bias)       mlm.decoder.bias
    cls.predictions.decoder.weight (tied)                       mlm.decoder.weight (= bert.tok_emb.weight)
    cls.seq_relationship.*                                      nsp.*
    classifier.*                                                classifier.*

Checkpoints with or without the ``bert.`` prefix load (a ``BertModel``, e.g. sentence-transformers'
MiniLM, has none). The model class comes from ``architectures`` in config.json (BertModel,
BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertForTokenClassification), or
else from the head tensors present. As transformers does, a pooler or NSP head that the chosen class
lacks is dropped (bert-base-uncased ships both, but loads as a BertForMaskedLM); the buffers
``embeddings.position_ids`` / ``token_type_ids`` of older checkpoints are ignored, and their
``LayerNorm.gamma`` / ``LayerNorm.beta`` names are read as ``weight`` / ``bias``.

Not supported (refused with an error naming the setting): ``position_embedding_type`` other than
absolute, ``is_decoder`` / ``add_cross_attention``, ``tie_word_embeddings: false``, activations other
than the GELUs and ReLU. Weights are loaded as float32.

Export writes the class's architecture (a ``BertForMaskedLM`` for the masked LM), ``model.safetensors``
without the tied decoder weight, and the tokenizer as ``tokenizer.json`` + ``vocab.txt`` +
``tokenizer_config.json`` (``BertTokenizer``, ``do_lower_case``), so ``AutoModelForMaskedLM`` and
``AutoTokenizer`` load the directory without custom code.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lmlab.errors import CheckpointError, ConfigError
from lmlab.interop.gpt2 import (
    HF_CONFIG_FILE,
    SAFETENSORS_FILE,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    _read_json,
    copy_state_dict,
    load_hf_weights,
    read_hf_config,
)
from lmlab.models.bert import (
    Bert,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from lmlab.tokenizers import WordPieceTokenizer

VOCAB_TXT = "vocab.txt"

# HF architecture name <-> lmlab class
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "BertModel": Bert,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
    "BertForSequenceClassification": BertForSequenceClassification,
    "BertForTokenClassification": BertForTokenClassification,
}

_ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

# per layer: HF suffix (after encoder.layer.N.) -> lmlab suffix (after blocks.N.); q/k/v are stacked apart
_LAYER_KEYS = {
    f"{hf}.{p}": f"{ours}.{p}"
    for hf, ours in (
        ("attention.output.dense", "self_attn.out_proj"),
        ("attention.output.LayerNorm", "norm1"),
        ("intermediate.dense", "ffn.fc1"),
        ("output.dense", "ffn.fc2"),
        ("output.LayerNorm", "norm2"),
    )
    for p in ("weight", "bias")
}
_QKV = ("query", "key", "value")
_EMBEDDING_KEYS = {
    "embeddings.word_embeddings.weight": "tok_emb.weight",
    "embeddings.position_embeddings.weight": "pos_emb.weight",
    "embeddings.token_type_embeddings.weight": "type_emb.weight",
    "embeddings.LayerNorm.weight": "emb_norm.weight",
    "embeddings.LayerNorm.bias": "emb_norm.bias",
}
_POOLER_KEYS = {"pooler.dense.weight": "pooler.weight", "pooler.dense.bias": "pooler.bias"}
_HEAD_KEYS = {  # never prefixed
    "cls.predictions.transform.dense.weight": "mlm.transform.weight",
    "cls.predictions.transform.dense.bias": "mlm.transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm.norm.bias",
    "cls.predictions.bias": "mlm.decoder.bias",
    "cls.seq_relationship.weight": "nsp.weight",
    "cls.seq_relationship.bias": "nsp.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
_IGNORED = {"embeddings.position_ids", "embeddings.token_type_ids", "cls.predictions.decoder.weight"}
_OLD_NORM_NAMES = re.compile(r"LayerNorm\.(gamma|beta)$")  # TF-era checkpoints (bert-base-uncased's .bin)
_OLD_NORM = {"gamma": "weight", "beta": "bias"}
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_OUR_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")

_MISSING = object()


# --------------------------------------------------------------------------------------------------
# config


def _get(hf: Mapping[str, Any], name: str, default: Any = _MISSING) -> Any:
    if name in hf and hf[name] is not None:
        return hf[name]
    if default is _MISSING:
        raise ConfigError(f"Hugging Face BERT config has no '{name}'")
    return default


def bert_config_from_hf(hf_config: Mapping[str, Any]) -> BertConfig:
    """A BERT ``config.json`` (as a dict) -> the equivalent ``BertConfig``.

    Raises ConfigError naming every setting lmlab's Bert cannot reproduce.
    """
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise ConfigError(f"expected a Hugging Face config with model_type 'bert', got '{model_type}'")
    unsupported = []
    pos = hf_config.get("position_embedding_type") or "absolute"
    if pos != "absolute":
        unsupported.append(f"position_embedding_type='{pos}' (only 'absolute')")
    if hf_config.get("is_decoder", False):
        unsupported.append("is_decoder=true (causal BERT)")
    if hf_config.get("add_cross_attention", False):
        unsupported.append("add_cross_attention=true (cross-attention layers)")
    if not hf_config.get("tie_word_embeddings", True):
        unsupported.append("tie_word_embeddings=false (an MLM decoder separate from the embedding)")
    act = hf_config.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        unsupported.append(f"hidden_act='{act}' (supported: {', '.join(_ACT_FROM_HF)})")
    if unsupported:
        raise ConfigError(
            "this BERT config uses settings lmlab's Bert does not support: " + "; ".join(unsupported)
        )
    id2label = hf_config.get("id2label")
    num_labels = len(id2label) if isinstance(id2label, dict) and id2label else hf_config.get("num_labels", 2)
    pad, cls_drop = hf_config.get("pad_token_id", 0), hf_config.get("classifier_dropout")
    try:
        hidden = int(_get(hf_config, "hidden_size", 768))
        cfg = BertConfig(
            vocab_size=int(_get(hf_config, "vocab_size")),
            block_size=int(_get(hf_config, "max_position_embeddings", 512)),
            type_vocab_size=int(_get(hf_config, "type_vocab_size", 2)),
            n_layer=int(_get(hf_config, "num_hidden_layers", 12)),
            n_head=int(_get(hf_config, "num_attention_heads", 12)),
            d_model=hidden,
            d_ff=int(_get(hf_config, "intermediate_size", 4 * hidden)),
            dropout=float(_get(hf_config, "hidden_dropout_prob", 0.1)),
            attn_dropout=float(_get(hf_config, "attention_probs_dropout_prob", 0.1)),
            activation=_ACT_FROM_HF[act],
            norm_eps=float(_get(hf_config, "layer_norm_eps", 1e-12)),
            pad_token_id=None if pad is None else int(pad),
            num_labels=int(num_labels),
            classifier_dropout=None if cls_drop is None else float(cls_drop),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Hugging Face BERT config has a value of the wrong type ({e})") from None
    cfg.validate()
    return cfg


def hf_config_from_bert(
    cfg: BertConfig,
    architecture: str = "BertForMaskedLM",
    dtype: str = "float32",
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The BERT ``config.json`` dict (the fields of ``transformers.BertConfig``) for ``cfg``; a
    classifier's ``id2label`` / ``label2id`` name its classes ``labels`` (default LABEL_0, ...)."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown BERT architecture '{architecture}'; valid: {', '.join(ARCHITECTURES)}")
    out: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "intermediate_size": cfg.d_ff or 4 * cfg.d_model,
        "hidden_act": _ACT_TO_HF[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "max_position_embeddings": cfg.block_size,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": cfg.classifier_dropout,
        "is_decoder": False,
        "add_cross_attention": False,
        "use_cache": False,
        "tie_word_embeddings": True,
        "dtype": dtype,
        "torch_dtype": dtype,
    }
    if architecture in ("BertForSequenceClassification", "BertForTokenClassification"):
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(cfg.num_labels)]
        if len(names) != cfg.num_labels or len(set(names)) != len(names):
            raise ConfigError(f"{cfg.num_labels} distinct label names needed, got {names}")
        out["id2label"] = {str(i): name for i, name in enumerate(names)}
        out["label2id"] = {name: i for i, name in enumerate(names)}
    return out


# --------------------------------------------------------------------------------------------------
# weights


def _more(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def state_dict_from_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BERT state dict (``BertModel`` keys, or ``BertFor*`` keys with the ``bert.`` prefix) -> lmlab keys:
    the encoder under ``bert.`` (``bert.tok_emb.weight``, ``bert.blocks.0...``, ``bert.pooler.*``) and
    the heads present (``mlm.*``, ``nsp.*``, ``classifier.*``); ``mlm.decoder.weight`` is the word
    embedding. Raises CheckpointError naming unknown or missing keys."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], torch.Tensor] = {}
    unknown: list[str] = []
    decoder_bias = None
    layers: set[int] = set()
    for key, value in sd.items():
        hf = _OLD_NORM_NAMES.sub(lambda m: "LayerNorm." + _OLD_NORM[m.group(1)], key)
        if hf in _HEAD_KEYS:
            out[_HEAD_KEYS[hf]] = value
            continue
        if hf == "cls.predictions.decoder.bias":
            decoder_bias = value
            continue
        name = hf.removeprefix("bert.")
        if name in _IGNORED or hf in _IGNORED:
            continue
        if name in _EMBEDDING_KEYS:
            out[f"bert.{_EMBEDDING_KEYS[name]}"] = value
        elif name in _POOLER_KEYS:
            out[f"bert.{_POOLER_KEYS[name]}"] = value
        elif m := _HF_LAYER.match(name):
            i, rest = int(m.group(1)), m.group(2)
            parts = rest.split(".")
            if rest in _LAYER_KEYS:
                out[f"bert.blocks.{i}.{_LAYER_KEYS[rest]}"] = value
            elif len(parts) == 4 and parts[:2] == ["attention", "self"] and parts[2] in _QKV:
                qkv[(i, f"{parts[2]}.{parts[3]}")] = value
            else:
                unknown.append(key)
                continue
            layers.add(i)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unexpected tensors in the BERT checkpoint: {_more(unknown)}")
    missing: list[str] = []
    for i in sorted(layers):
        for p in ("weight", "bias"):
            absent = [f"encoder.layer.{i}.attention.self.{n}.{p}" for n in _QKV if (i, f"{n}.{p}") not in qkv]
            if absent:
                missing += absent
            else:
                out[f"bert.blocks.{i}.self_attn.in_proj.{p}"] = torch.cat([qkv[i, f"{n}.{p}"] for n in _QKV])
    if "mlm.decoder.bias" not in out and decoder_bias is not None:
        out["mlm.decoder.bias"] = decoder_bias
    n_layer = max(layers) + 1 if layers else 0
    expected = [f"bert.{k}" for k in _EMBEDDING_KEYS.values()] + [
        f"bert.blocks.{i}.{ours}"
        for i in range(n_layer)
        for ours in [*_LAYER_KEYS.values(), "self_attn.in_proj.weight", "self_attn.in_proj.bias"]
    ]
    if any(k.startswith("mlm.") for k in out):
        expected += ["mlm.transform.weight", "mlm.transform.bias", "mlm.norm.weight", "mlm.norm.bias"]
        expected += ["mlm.decoder.bias"]
    for group in (("bert.pooler.weight", "bert.pooler.bias"), ("nsp.weight", "nsp.bias")):
        if any(k in out for k in group):
            expected += list(group)
    if any(k.startswith("classifier.") for k in out):
        expected += ["classifier.weight", "classifier.bias"]
    missing += [k for k in expected if k not in out]
    if missing:
        raise CheckpointError(f"the BERT checkpoint lacks tensors for: {_more(missing)}")
    if "mlm.decoder.bias" in out:
        out["mlm.decoder.weight"] = out["bert.tok_emb.weight"]
    return out


def state_dict_to_hf(our_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lmlab Bert's state dict -> HF keys: a bare ``Bert``'s as ``BertModel`` keys, a head model's
    (encoder under ``bert.``) as the ``BertFor*`` keys. The tied decoder weight is left out.

    Every tensor is contiguous, on the CPU and shares no storage with another: ready for
    ``safetensors.save_file``.
    """
    prefixed = any(k.startswith("bert.") for k in our_sd)
    emb = {ours: hf for hf, ours in _EMBEDDING_KEYS.items()} | {ours: hf for hf, ours in _POOLER_KEYS.items()}
    layer = {ours: hf for hf, ours in _LAYER_KEYS.items()}
    head = {ours: hf for hf, ours in _HEAD_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in our_sd.items():
        if key == "mlm.decoder.weight":
            continue  # tied to the word embedding
        if key in head:
            out[head[key]] = value
            continue
        if prefixed and not key.startswith("bert."):
            unknown.append(key)
            continue
        name, pre = key.removeprefix("bert."), "bert." if prefixed else ""
        if name in emb:
            out[pre + emb[name]] = value
        elif (m := _OUR_LAYER.match(name)) and m.group(2) in layer:
            out[f"{pre}encoder.layer.{m.group(1)}.{layer[m.group(2)]}"] = value
        elif m and m.group(2) in ("self_attn.in_proj.weight", "self_attn.in_proj.bias"):
            p = m.group(2).rsplit(".", 1)[1]
            for n, t in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{pre}encoder.layer.{m.group(1)}.attention.self.{n}.{p}"] = t.clone()  # own storage
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"no BERT equivalent for these model tensors: {_more(unknown)}")
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def _model_class(hf_config: Mapping[str, Any], sd: Mapping[str, torch.Tensor]) -> type[nn.Module]:
    """The lmlab class for a checkpoint: by ``architectures``, else by the head tensors present."""
    for arch in hf_config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if "nsp.weight" in sd and "mlm.decoder.bias" in sd:
        return BertForPreTraining
    if "mlm.decoder.bias" in sd:
        return BertForMaskedLM
    return Bert


def _build(cls: type[nn.Module], cfg: BertConfig, sd: Mapping[str, torch.Tensor]) -> nn.Module:
    if cls is Bert:
        return Bert(cfg, pooler="bert.pooler.weight" in sd)
    if cls is BertForPreTraining:  # the 'bert' family's model with model.next_sentence
        cfg = dataclasses.replace(cfg, next_sentence=True)
    return cls(cfg)


def load_bert_weights(model: nn.Module, sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Copy ``state_dict_from_hf``'s output into ``model`` (float32), dropping a pooler / head the
    model lacks; CheckpointError naming missing, unexpected or mis-shaped tensors."""
    if isinstance(model, Bert):
        sd = {k.removeprefix("bert."): v for k, v in sd.items() if k.startswith("bert.")}
    expected = model.state_dict()
    droppable = re.compile(r"^(bert\.)?pooler\.|^(mlm|nsp|classifier)\.")
    sd = {k: v for k, v in sd.items() if k in expected or not droppable.match(k)}
    copy_state_dict(model, sd, where)


# --------------------------------------------------------------------------------------------------
# tokenizers


def load_hf_bert_tokenizer(hf_dir: str | Path) -> WordPieceTokenizer | None:
    """The WordPiece tokenizer of a BERT directory: ``tokenizer.json``, else ``vocab.txt`` (cased or
    uncased as ``tokenizer_config.json``'s ``do_lower_case`` says, default uncased); None if neither."""
    d = Path(hf_dir)
    tok_config = _read_json(d / TOKENIZER_CONFIG) if (d / TOKENIZER_CONFIG).is_file() else {}
    if not isinstance(tok_config, dict):
        tok_config = {}
    try:
        if (d / TOKENIZER_JSON).is_file():
            raw = _read_json(d / TOKENIZER_JSON)
            if isinstance(raw, dict) and (raw.get("model") or {}).get("type") == "WordPiece":
                return WordPieceTokenizer.from_file(d / TOKENIZER_JSON)
        if (d / VOCAB_TXT).is_file():
            return WordPieceTokenizer.from_vocab(
                d / VOCAB_TXT,
                lowercase=bool(tok_config.get("do_lower_case", True)),
                strip_accents=tok_config.get("strip_accents"),
                handle_chinese_chars=bool(tok_config.get("tokenize_chinese_chars", True)),
            )
    except CheckpointError:
        raise
    except Exception as e:  # the HF parser raises plain Exception subclasses
        raise CheckpointError(f"cannot load the tokenizer in {d}: {e}") from None
    return None


def save_hf_bert_tokenizer(tokenizer: WordPieceTokenizer, out_dir: str | Path, model_max_length: int) -> None:
    """tokenizer.json + vocab.txt + tokenizer_config.json (``BertTokenizer``)."""
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise ConfigError(f"a BERT export needs a WordPieceTokenizer, not a {type(tokenizer).__name__}")
    out = Path(out_dir)
    tokenizer.save(out / TOKENIZER_JSON)
    vocab = sorted(tokenizer.tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] == list(range(len(vocab))) and not any("\n" in t for t, _ in vocab):
        (out / VOCAB_TXT).write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    else:
        warnings.warn(f"{out}: the vocabulary ids are not contiguous; no {VOCAB_TXT} written", stacklevel=3)
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    tok_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": tokenizer.lowercase,
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / TOKENIZER_CONFIG).write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# whole directories


def import_hf_bert(hf_dir: str | Path) -> tuple[nn.Module, WordPieceTokenizer | None]:
    """A Hugging Face BERT directory -> (lmlab Bert or BertFor* model: eval mode, float32, CPU;
    its WordPiece tokenizer or None)."""
    d = Path(hf_dir)
    hf_config = read_hf_config(d)
    cfg = bert_config_from_hf(hf_config)
    sd = state_dict_from_hf(load_hf_weights(d))
    model = _build(_model_class(hf_config, sd), cfg, sd)
    load_bert_weights(model, sd, str(d))
    model.eval()
    tokenizer = load_hf_bert_tokenizer(d)
    if tokenizer is None:
        warnings.warn(f"{d} holds no tokenizer ({TOKENIZER_JSON} or {VOCAB_TXT})", stacklevel=2)
    elif tokenizer.vocab_size > cfg.vocab_size:
        warnings.warn(
            f"{d}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}",
            stacklevel=2,
        )
    return model, tokenizer


def is_bert_model(model: nn.Module) -> bool:
    """True for lmlab's Bert and its heads (exactly those classes)."""
    return type(model) in ARCHITECTURES.values()


def architecture_of(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ConfigError(f"{type(model).__name__} is not a BERT model")


def export_hf_bert(
    model: nn.Module,
    tokenizer: WordPieceTokenizer | None,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write a Bert (as ``BertModel``) or a head model (``BertForMaskedLM``, ...) and its tokenizer as a
    Hugging Face directory that ``transformers.AutoModel*`` / ``AutoTokenizer.from_pretrained`` load.
    Weights keep their dtype; a classifier's class names (``labels``) become ``id2label``. Without a
    tokenizer only the model is written. Returns ``out_dir``."""
    arch = architecture_of(model)
    cfg: BertConfig = model.config
    if cfg.activation not in _ACT_TO_HF:
        raise ConfigError(f"model.activation='{cfg.activation}' has no BERT equivalent")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict_to_hf(model.state_dict())
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    save_file(sd, str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    hf_config = hf_config_from_bert(cfg, arch, dtype, labels)
    (out / HF_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    if tokenizer is None:
        warnings.warn(f"no tokenizer given: {out} holds the model only", stacklevel=2)
    else:
        save_hf_bert_tokenizer(tokenizer, out, cfg.block_size)
    return out
