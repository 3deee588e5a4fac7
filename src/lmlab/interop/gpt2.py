"""GPT-2 in the Hugging Face layout <-> lmlab's GPT: config, weights and tokenizer.

A Hugging Face GPT-2 directory holds ``config.json`` (``model_type: gpt2``), the weights
(``model.safetensors``, sharded safetensors, or a ``pytorch_model.bin``) and a tokenizer
(``tokenizer.json``, or the older ``vocab.json`` + ``merges.txt``). GPT-2 is exactly lmlab's GPT with
learned positions, pre-LN LayerNorm, biases and the tanh GELU, so the conversion is a renaming:

    HF (GPT2LMHeadModel)                      lmlab GPT
    transformer.wte.weight                    tok_emb.weight
    transformer.wpe.weight                    pos_emb.weight
    transformer.h.N.ln_1.{weight,bias}        blocks.N.norm1.{weight,bias}
    transformer.h.N.attn.c_attn.{weight,bias} blocks.N.self_attn.in_proj.{weight,bias}   weight transposed
    transformer.h.N.attn.c_proj.{weight,bias} blocks.N.self_attn.out_proj.{weight,bias}  weight transposed
    transformer.h.N.ln_2.{weight,bias}        blocks.N.norm2.{weight,bias}
    transformer.h.N.mlp.c_fc.{weight,bias}    blocks.N.ffn.fc1.{weight,bias}             weight transposed
    transformer.h.N.mlp.c_proj.{weight,bias}  blocks.N.ffn.fc2.{weight,bias}             weight transposed
    transformer.ln_f.{weight,bias}            norm_f.{weight,bias}
    lm_head.weight (absent when tied)         lm_head.weight (= tok_emb.weight when tied)

GPT-2's linear layers are ``Conv1D``: their weight is (in, out), the transpose of ``nn.Linear``'s.
The checkpoint's ``attn.bias`` / ``attn.masked_bias`` buffers (the causal mask of older
transformers versions) are ignored. Checkpoints saved from ``GPT2Model`` (no ``transformer.``
prefix, no ``lm_head``) load too.

Not supported (refused with an error naming the setting): ``scale_attn_by_inverse_layer_idx``,
``scale_attn_weights: false``, ``add_cross_attention``, activations other than the GELUs and ReLU.
``reorder_and_upcast_attn`` is accepted: it only changes rounding under mixed precision, not the
function computed. Weights are loaded as float32 whatever their stored dtype.

A ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``; a file that is not a plain
state dict of tensors is refused, because unpickling it in full could execute arbitrary code.

Tokenizers: a byte-level BPE is exported as the ``tokenizer.json`` it already is, plus
``vocab.json`` / ``merges.txt`` and a ``tokenizer_config.json`` (``GPT2Tokenizer``, ``<|endoftext|>``
as bos/eos/unk) so ``AutoTokenizer`` loads it. A character tokenizer is exported as an equivalent
``tokenizers`` BPE with no merges and byte fallback (one token per character, ``<0xNN>`` byte
tokens, the same ids), loadable by ``AutoTokenizer`` as a ``PreTrainedTokenizerFast``; importing
such a ``tokenizer.json`` gives back a ``CharTokenizer``.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from lmlab.errors import CheckpointError, ConfigError
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.tokenizers import EOS_TOKEN, BPETokenizer, CharTokenizer

HF_CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"

# HF activation_function -> lmlab activation (gelu_new, gelu_pytorch_tanh and gelu_fast are the
# same tanh approximation written three ways).
_ACT_FROM_HF = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
_ACT_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# per layer: HF suffix (after h.N.) -> (lmlab suffix (after blocks.N.), transpose?)
_LAYER_KEYS: dict[str, tuple[str, bool]] = {
    "ln_1.weight": ("norm1.weight", False),
    "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("self_attn.in_proj.weight", True),
    "attn.c_attn.bias": ("self_attn.in_proj.bias", False),
    "attn.c_proj.weight": ("self_attn.out_proj.weight", True),
    "attn.c_proj.bias": ("self_attn.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False),
    "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("ffn.fc1.weight", True),
    "mlp.c_fc.bias": ("ffn.fc1.bias", False),
    "mlp.c_proj.weight": ("ffn.fc2.weight", True),
    "mlp.c_proj.bias": ("ffn.fc2.bias", False),
}
_TOP_KEYS = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "norm_f.weight",
    "ln_f.bias": "norm_f.bias",
}
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers, not weights
_HF_LAYER = re.compile(r"^h\.(\d+)\.(.+)$")
_OUR_LAYER = re.compile(r"^blocks\.(\d+)\.(.+)$")

_MISSING = object()


# --------------------------------------------------------------------------------------------------
# config


def _get(hf: Mapping[str, Any], name: str, alias: str | None = None, default: Any = _MISSING) -> Any:
    if name in hf:
        return hf[name]
    if alias is not None and alias in hf:
        return hf[alias]
    if default is _MISSING:
        raise ConfigError(f"Hugging Face GPT-2 config has no '{name}'")
    return default


def gpt_config_from_hf(hf_config: Mapping[str, Any]) -> GPTConfig:
    """A GPT-2 ``config.json`` (as a dict) -> the equivalent ``GPTConfig``.

    Raises ConfigError naming every setting lmlab's GPT cannot reproduce.
    """
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ConfigError(f"expected a Hugging Face config with model_type 'gpt2', got '{model_type}'")
    unsupported = []
    if hf_config.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=true (attention scaled by 1/(layer+1))")
    if not hf_config.get("scale_attn_weights", True):
        unsupported.append("scale_attn_weights=false (attention without the 1/sqrt(d) scale)")
    if hf_config.get("add_cross_attention", False):
        unsupported.append("add_cross_attention=true (cross-attention layers)")
    act = hf_config.get("activation_function", "gelu_new")
    if act not in _ACT_FROM_HF:
        unsupported.append(f"activation_function='{act}' (supported: {', '.join(_ACT_FROM_HF)})")
    if unsupported:
        raise ConfigError(
            "this GPT-2 config uses settings lmlab's GPT does not support: " + "; ".join(unsupported)
        )
    n_inner = hf_config.get("n_inner")
    try:
        cfg = GPTConfig(
            vocab_size=int(_get(hf_config, "vocab_size")),
            block_size=int(_get(hf_config, "n_positions", "max_position_embeddings", 1024)),
            n_layer=int(_get(hf_config, "n_layer", "num_hidden_layers", 12)),
            n_head=int(_get(hf_config, "n_head", "num_attention_heads", 12)),
            n_embd=int(_get(hf_config, "n_embd", "hidden_size", 768)),
            d_ff=int(n_inner) if n_inner else 0,
            dropout=float(hf_config.get("resid_pdrop", 0.1)),
            bias=True,
            activation=_ACT_FROM_HF[act],
            norm="layernorm",
            norm_eps=float(hf_config.get("layer_norm_epsilon", 1e-5)),
            pos_embedding="learned",
            tie_weights=bool(hf_config.get("tie_word_embeddings", True)),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Hugging Face GPT-2 config has a value of the wrong type ({e})") from None
    cfg.validate()
    return cfg


def check_gpt2_compatible(cfg: GPTConfig) -> None:
    """Raise ConfigError naming every setting of ``cfg`` that a Hugging Face GPT-2 cannot express."""
    problems = []
    if cfg.pos_embedding != "learned":
        problems.append(f"model.pos_embedding='{cfg.pos_embedding}' (GPT-2 needs 'learned')")
    if cfg.norm != "layernorm":
        problems.append(f"model.norm='{cfg.norm}' (GPT-2 needs 'layernorm')")
    if cfg.activation not in _ACT_TO_HF:
        problems.append(f"model.activation='{cfg.activation}' (GPT-2 supports {', '.join(_ACT_TO_HF)})")
    if not cfg.bias:
        problems.append("model.bias=false (GPT-2 has biases in every linear layer and norm)")
    if problems:
        raise ConfigError("this model cannot be exported as a Hugging Face GPT-2: " + "; ".join(problems))


def hf_config_from_gpt(
    cfg: GPTConfig, bos_token_id: int | None = None, eos_token_id: int | None = None, dtype: str = "float32"
) -> dict[str, Any]:
    """The GPT-2 ``config.json`` dict (every field of ``transformers.GPT2Config``) for ``cfg``."""
    check_gpt2_compatible(cfg)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.d_ff or None,
        "activation_function": _ACT_TO_HF[cfg.activation],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "scale_attn_weights": True,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": cfg.tie_weights,
        "dtype": dtype,
        "torch_dtype": dtype,
    }


# --------------------------------------------------------------------------------------------------
# weights


def state_dict_from_hf(
    sd: Mapping[str, torch.Tensor], tie_weights: bool | None = None
) -> dict[str, torch.Tensor]:
    """A GPT-2 state dict (``GPT2LMHeadModel`` or ``GPT2Model`` keys) -> lmlab GPT's state dict.

    ``tie_weights``: True uses ``wte`` as the output projection (as transformers does for tied
    models, ignoring any stored ``lm_head.weight``); False requires ``lm_head.weight``; None ties
    only when ``lm_head.weight`` is absent. Raises CheckpointError naming unknown or missing keys.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    lm_head = None
    layers: set[int] = set()
    for key, value in sd.items():
        name = key[len("transformer.") :] if key.startswith("transformer.") else key
        if name == "lm_head.weight":
            lm_head = value
        elif _IGNORED.match(name):
            continue
        elif name in _TOP_KEYS:
            out[_TOP_KEYS[name]] = value
        elif (m := _HF_LAYER.match(name)) and m.group(2) in _LAYER_KEYS:
            ours, transpose = _LAYER_KEYS[m.group(2)]
            layers.add(int(m.group(1)))
            out[f"blocks.{m.group(1)}.{ours}"] = value.t().contiguous() if transpose else value
        else:
            unknown.append(key)
    if unknown:
        more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise CheckpointError(f"unexpected tensors in the GPT-2 checkpoint: {', '.join(unknown[:5])}{more}")
    n_layer = max(layers) + 1 if layers else 0
    expected = list(_TOP_KEYS.values()) + [
        f"blocks.{i}.{ours}" for i in range(n_layer) for ours, _ in _LAYER_KEYS.values()
    ]
    missing = [k for k in expected if k not in out]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"the GPT-2 checkpoint lacks tensors for: {', '.join(missing[:5])}{more}")
    if tie_weights is None:
        tie_weights = lm_head is None
    if tie_weights:
        out["lm_head.weight"] = out["tok_emb.weight"]
    elif lm_head is None:
        raise CheckpointError(
            "the GPT-2 config says tie_word_embeddings=false but the checkpoint has no lm_head.weight"
        )
    else:
        out["lm_head.weight"] = lm_head
    return out


def state_dict_to_hf(our_sd: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """lmlab GPT's state dict -> a ``GPT2LMHeadModel`` state dict (``lm_head.weight`` only if untied).

    Every tensor is contiguous, on the CPU and shares no storage with another: ready for
    ``safetensors.save_file``.
    """
    check_gpt2_compatible(cfg)
    top = {ours: hf for hf, ours in _TOP_KEYS.items()}
    layer = {ours: (hf, t) for hf, (ours, t) in _LAYER_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in our_sd.items():
        if key == "lm_head.weight":
            if not cfg.tie_weights:
                out["lm_head.weight"] = value
        elif key in top:
            out[f"transformer.{top[key]}"] = value
        elif (m := _OUR_LAYER.match(key)) and m.group(2) in layer:
            hf, transpose = layer[m.group(2)]
            out[f"transformer.h.{m.group(1)}.{hf}"] = value.t() if transpose else value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"no GPT-2 equivalent for these model tensors: {', '.join(unknown[:5])}")
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None


def load_bin_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model.bin`` that is a plain ``{name: tensor}`` dict, loaded without running code.

    Anything else is refused with a CheckpointError: ``torch.load(weights_only=False)`` would
    unpickle it in full, and a pickle can execute arbitrary code.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        detail = f" ({lines[0]})" if lines else ""
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain state dict of tensors{detail}, and unpickling it "
            "in full may execute arbitrary code. Convert it to model.safetensors with a tool you trust."
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({e})") from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"refusing to load {path}: expected a plain state dict {{name: tensor}}, got {type(obj).__name__}"
        )
    return obj


def load_hf_weights(hf_dir: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in a Hugging Face model directory (safetensors preferred, sharded or not)."""
    d = Path(hf_dir)
    if (d / SAFETENSORS_FILE).is_file():
        return _load_safetensors(d / SAFETENSORS_FILE)
    for index_name, loader in ((SAFETENSORS_INDEX, _load_safetensors), (BIN_INDEX, load_bin_state_dict)):
        if (d / index_name).is_file():
            index = _read_json(d / index_name)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{d / index_name} has no 'weight_map'")
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if Path(shard).name != shard:
                    raise CheckpointError(f"{d / index_name}: shard name '{shard}' is not a plain file name")
                sd.update(loader(d / shard))
            return sd
    if (d / BIN_FILE).is_file():
        return load_bin_state_dict(d / BIN_FILE)
    raise CheckpointError(
        f"no weights in {d}: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {BIN_FILE} or {BIN_INDEX}"
    )


# --------------------------------------------------------------------------------------------------
# tokenizers


def _token_content(tok: Any) -> str | None:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, dict) and isinstance(tok.get("content"), str):
        return tok["content"]
    return None


def _char_tokenizer_from_json(raw: dict[str, Any]) -> CharTokenizer | None:
    """The CharTokenizer that a ``tokenizer.json`` written by ``char_tokenizer_to_hf`` encodes, else None."""
    model = raw.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or model.get("merges"):
        return None
    if raw.get("pre_tokenizer") or raw.get("normalizer") or raw.get("added_tokens"):
        return None
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or len(vocab) < 256:
        return None
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        return None
    n = len(by_id) - 256
    chars = [t for t, _ in by_id[:n]]
    if any(len(c) != 1 for c in chars) or chars != sorted(chars):
        return None
    if [t for t, _ in by_id[n:]] != [f"<0x{b:02X}>" for b in range(256)]:
        return None
    return CharTokenizer(chars)


def char_tokenizer_to_hf(tok: CharTokenizer) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` that encodes and decodes exactly like ``tok``, with the same ids:
    a BPE with no merges whose vocabulary is the characters, then 256 ``<0xNN>`` byte-fallback tokens."""
    vocab = {c: i for i, c in enumerate(tok.chars)}
    vocab.update({f"<0x{b:02X}>": tok.n_chars + b for b in range(256)})
    t = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    t.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return t


def _bpe_from_vocab_merges(d: Path, tok_config: dict[str, Any]) -> Tokenizer:
    """GPT-2's vocab.json + merges.txt -> its byte-level BPE (built as transformers builds it)."""
    try:
        bpe = models.BPE.from_file(str(d / VOCAB_JSON), str(d / MERGES_TXT))
    except Exception as e:
        raise CheckpointError(f"cannot read {d / VOCAB_JSON} / {d / MERGES_TXT}: {e}") from None
    t = Tokenizer(bpe)
    t.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(tok_config.get("add_prefix_space", False))
    )
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    added = d / "added_tokens.json"
    if added.is_file():
        extra = _read_json(added)
        for content, tid in sorted(extra.items(), key=lambda kv: kv[1]):
            t.add_tokens([AddedToken(content, special=True)])
            if t.token_to_id(content) != tid:
                raise CheckpointError(
                    f"{added}: token {content!r} should have id {tid}, not {t.token_to_id(content)}"
                )
    specials = {EOS_TOKEN}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if (content := _token_content(tok_config.get(key))) is not None:
            specials.add(content)
    present = [s for s in sorted(specials) if t.token_to_id(s) is not None]
    if present:  # already in the vocabulary: marking them special keeps their ids
        t.add_special_tokens([AddedToken(s, special=True) for s in present])
    return t


def load_hf_tokenizer(hf_dir: str | Path) -> BPETokenizer | CharTokenizer | None:
    """The tokenizer of a Hugging Face model directory, or None when it holds none.

    ``tokenizer.json`` is preferred (wrapped as a BPETokenizer, or a CharTokenizer when it is one
    exported by lmlab); otherwise ``vocab.json`` + ``merges.txt`` build GPT-2's byte-level BPE.
    """
    d = Path(hf_dir)
    tok_config = _read_json(d / TOKENIZER_CONFIG) if (d / TOKENIZER_CONFIG).is_file() else {}
    if not isinstance(tok_config, dict):
        tok_config = {}
    if (d / TOKENIZER_JSON).is_file():
        raw = _read_json(d / TOKENIZER_JSON)
        if isinstance(raw, dict) and (char := _char_tokenizer_from_json(raw)) is not None:
            return char
        try:
            return BPETokenizer(Tokenizer.from_file(str(d / TOKENIZER_JSON)))
        except Exception as e:  # the HF parser raises plain Exception subclasses
            raise CheckpointError(f"cannot load {d / TOKENIZER_JSON}: {e}") from None
    if (d / VOCAB_JSON).is_file() and (d / MERGES_TXT).is_file():
        return BPETokenizer(_bpe_from_vocab_merges(d, tok_config))
    return None


def _write_vocab_merges(tok: Tokenizer, out: Path) -> bool:
    """vocab.json + merges.txt (GPT-2's slow-tokenizer files) for a byte-level BPE; False if not one."""
    raw = json.loads(tok.to_str())
    model = raw.get("model") or {}
    if model.get("type") != "BPE" or (raw.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        return False
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (out / VOCAB_JSON).write_text(json.dumps(model.get("vocab", {}), ensure_ascii=False), encoding="utf-8")
    (out / MERGES_TXT).write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return True


def save_hf_tokenizer(
    tokenizer: BPETokenizer | CharTokenizer, out_dir: str | Path, model_max_length: int
) -> None:
    """tokenizer.json + tokenizer_config.json (+ vocab.json / merges.txt for a byte-level BPE)."""
    out = Path(out_dir)
    tok_config: dict[str, Any] = {
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        # no token_type_ids: GPT-2 would add them to the input as embeddings of token 0
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if isinstance(tokenizer, CharTokenizer):
        hf_tok = char_tokenizer_to_hf(tokenizer)
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    elif isinstance(tokenizer, BPETokenizer):
        hf_tok = tokenizer.tokenizer
        pre = json.loads(hf_tok.to_str()).get("pre_tokenizer") or {}
        byte_level = pre.get("type") == "ByteLevel"  # GPT-2's own; anything else: the generic class
        tok_config["tokenizer_class"] = "GPT2Tokenizer" if byte_level else "PreTrainedTokenizerFast"
        if byte_level:
            tok_config["add_prefix_space"] = bool(pre.get("add_prefix_space", False))
        if tokenizer.eos_id is not None:
            eos = hf_tok.id_to_token(tokenizer.eos_id)
            tok_config.update(bos_token=eos, eos_token=eos, unk_token=eos)
        if byte_level:
            _write_vocab_merges(hf_tok, out)
    else:
        raise ConfigError(f"cannot export a {type(tokenizer).__name__} as a Hugging Face tokenizer")
    hf_tok.save(str(out / TOKENIZER_JSON))
    (out / TOKENIZER_CONFIG).write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# whole directories


def copy_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Copy ``sd`` into ``model`` (as float32), or raise a CheckpointError naming what does not match."""
    expected = model.state_dict()
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)}, config {tuple(expected[k].shape)})"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if mismatched or missing or extra:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}"
            for label, keys in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", extra))
            if keys
        )
        raise CheckpointError(f"the weights in {where} do not match its {HF_CONFIG_FILE}: {detail}")
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(sd[name].to(torch.float32))


def read_hf_config(hf_dir: str | Path) -> dict[str, Any]:
    path = Path(hf_dir) / HF_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a Hugging Face model directory (no {HF_CONFIG_FILE})")
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a model config (expected a JSON object)")
    return raw


def import_hf_gpt2(hf_dir: str | Path) -> tuple[GPT, BPETokenizer | CharTokenizer | None]:
    """A Hugging Face GPT-2 directory -> (lmlab GPT: eval mode, float32, CPU; its tokenizer or None)."""
    d = Path(hf_dir)
    cfg = gpt_config_from_hf(read_hf_config(d))
    sd = state_dict_from_hf(load_hf_weights(d), tie_weights=cfg.tie_weights)
    model = GPT(cfg)
    copy_state_dict(model, sd, d)
    model.eval()
    tokenizer = load_hf_tokenizer(d)
    if tokenizer is None:
        warnings.warn(
            f"{d} holds no tokenizer ({TOKENIZER_JSON} or {VOCAB_JSON} + {MERGES_TXT})", stacklevel=2
        )
    elif tokenizer.vocab_size > cfg.vocab_size:
        warnings.warn(
            f"{d}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}",
            stacklevel=2,
        )
    return model, tokenizer


def export_hf_gpt2(model: GPT, tokenizer: BPETokenizer | CharTokenizer | None, out_dir: str | Path) -> Path:
    """Write ``model`` (and ``tokenizer``) as a Hugging Face GPT-2 directory that
    ``transformers.AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` load. Returns ``out_dir``.

    Raises ConfigError naming any model setting GPT-2 cannot express (rope/sinusoidal positions,
    rmsnorm, swiglu, bias=false). Weights keep their dtype. Without a tokenizer only the model is written.
    """
    cfg: GPTConfig = model.config
    check_gpt2_compatible(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict_to_hf(model.state_dict(), cfg)
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    eos = getattr(tokenizer, "eos_id", None)
    hf_config = hf_config_from_gpt(cfg, bos_token_id=eos, eos_token_id=eos, dtype=dtype)
    save_file(sd, str(out / SAFETENSORS_FILE), metadata={"format": "pt"})
    (out / HF_CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    if tokenizer is None:
        warnings.warn(f"no tokenizer given: {out} holds the model only", stacklevel=2)
    else:
        save_hf_tokenizer(tokenizer, out, cfg.block_size)
    return out
