"""GPT-2 interop: transformers' GPT2LMHeadModel <-> lmlab GPT (config, weights, tokenizer, CLI)."""

import json
import os
import pathlib
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*holds no tokenizer"),
    pytest.mark.filterwarnings("ignore:no tokenizer given"),
]

import lmlab  # noqa: E402
from lmlab.cli import main as cli_main  # noqa: E402
from lmlab.errors import CheckpointError, ConfigError  # noqa: E402
from lmlab.generate import generate  # noqa: E402
from lmlab.interop import export_hf, import_hf  # noqa: E402
from lmlab.interop.gpt2 import gpt_config_from_hf, state_dict_from_hf, state_dict_to_hf  # noqa: E402
from lmlab.models.gpt import GPT, GPTConfig  # noqa: E402
from lmlab.tokenizers import BPETokenizer, CharTokenizer  # noqa: E402

TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other. "
)
SAMPLES = ["a good fortune, must be", "Ünïcödé 🙂 and <|endoftext|> too", "  spaces\n\ttabs  "]


def _random_configs(n: int, seed: int = 0) -> list[dict]:
    """The two corners of the tested ranges, then random tiny GPT-2 configurations."""
    rng = random.Random(seed)
    sizes = [(1, 1, 16, 50, 16), (3, 4, 64, 300, 64)]
    for _ in range(n - 2):
        n_head = rng.randint(1, 4)
        head_dim = rng.randint(-(-16 // n_head), 64 // n_head)
        sizes.append(
            (rng.randint(1, 3), n_head, n_head * head_dim, rng.randint(50, 300), rng.randint(16, 64))
        )
    return [
        dict(
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            vocab_size=vocab,
            n_positions=n_pos,
            tie_word_embeddings=i % 2 == 0,
            activation_function=["gelu_new", "gelu", "relu", "gelu_pytorch_tanh"][i % 4],
            n_inner=None if i % 3 else 40,
            layer_norm_epsilon=[1e-5, 1e-6][i % 2],
        )
        for i, (n_layer, n_head, n_embd, vocab, n_pos) in enumerate(sizes)
    ]


CONFIGS = _random_configs(6)


def hf_model(seed: int = 0, **kw) -> "transformers.GPT2LMHeadModel":
    torch.manual_seed(seed)
    cfg = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.1, bos_token_id=None)
    cfg["eos_token_id"] = None
    cfg.update(kw)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()


def hf_greedy(model, ids: list[int], n: int, window: int) -> list[int]:
    """Greedy decoding conditioned on the last ``window`` tokens (lmlab's sliding-window rule)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-window:]])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids



@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train([TEXT] * 4, vocab_size=300)


@pytest.mark.parametrize("kw", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_import_matches_transformers(tmp_path, kw):
    ref = hf_model(**kw)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    model, tok = import_hf(tmp_path)
    assert tok is None
    assert isinstance(model, GPT) and model.config.tie_weights == kw["tie_word_embeddings"]
    assert (model.lm_head.weight is model.tok_emb.weight) == kw["tie_word_embeddings"]

    x = torch.randint(0, kw["vocab_size"], (2, kw["n_positions"]))
    with torch.no_grad():
        diff = (model(x) - ref(x).logits).abs().max().item()
    assert diff <= 1e-4

    prompt = x[0, :5].tolist()
    ours = generate(model, prompt, 50, temperature=0).squeeze(0).tolist()
    assert ours == hf_greedy(ref, prompt, 50, kw["n_positions"])

    # export -> import gives back identical tensors
    export_hf(model, None, tmp_path / "export")
    again, _ = import_hf(tmp_path / "export")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("tied", [True, False])
def test_export_loads_in_transformers(tmp_path, bpe, tied):
    torch.manual_seed(1)
    cfg = GPTConfig(
        vocab_size=bpe.vocab_size + 4,
        block_size=32,
        n_layer=2,
        n_head=2,
        n_embd=32,
        activation="gelu_tanh",
        tie_weights=tied,
    )
    model = GPT(cfg).eval()
    export_hf(model, bpe, tmp_path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(ref).__name__ == "GPT2LMHeadModel"
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        assert (model(x) - ref(x).logits).abs().max().item() <= 1e-4

    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in SAMPLES:
        assert hf_tok.encode(s, add_special_tokens=False) == bpe.encode(s)
        assert hf_tok.decode(bpe.encode(s)) == s
    assert hf_tok.eos_token_id == bpe.eos_id == ref.config.eos_token_id


def test_char_tokenizer_export(tmp_path):
    char = CharTokenizer.train([TEXT])
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=char.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=16)).eval()
    export_hf(model, char, tmp_path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in SAMPLES + [TEXT[:80]]:
        assert hf_tok.encode(s, add_special_tokens=False) == char.encode(s)
        assert hf_tok.decode(char.encode(s)) == s
    _, tok = import_hf(tmp_path)  # comes back as the character tokenizer it was
    assert isinstance(tok, CharTokenizer) and tok.chars == char.chars


def test_hf_tokenizer_formats(tmp_path, bpe):
    """tokenizer.json and vocab.json + merges.txt (GPT-2's slow files) give the same encodings."""
    ref = hf_model(vocab_size=bpe.vocab_size, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    fast = transformers.GPT2TokenizerFast(tokenizer_object=bpe.tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(tmp_path)
    _, tok = import_hf(tmp_path)
    assert isinstance(tok, BPETokenizer) and tok.eos_id == bpe.eos_id
    for s in SAMPLES:
        assert tok.encode(s) == bpe.encode(s)

    slow_dir = tmp_path / "slow"
    export_hf(import_hf(tmp_path)[0], bpe, slow_dir)
    (slow_dir / "tokenizer.json").unlink()
    _, tok = import_hf(slow_dir)
    assert tok.eos_id == bpe.eos_id
    for s in SAMPLES:
        assert tok.encode(s) == bpe.encode(s) and tok.decode(tok.encode(s)) == s


def test_lmlab_load_and_convert(tmp_path, bpe, capsys):
    ref = hf_model(vocab_size=bpe.vocab_size, n_positions=48, n_embd=32, n_layer=2, n_head=4)
    hf_dir = tmp_path / "hf"
    ref.save_pretrained(hf_dir, safe_serialization=True)
    bpe.save(hf_dir / "tokenizer.json")

    p = lmlab.load(hf_dir)
    assert p.config.family == "gpt" and p.config.model.block_size == 48
    text = p.generate("a good fortune", max_new_tokens=20, temperature=0)
    prompt = bpe.encode("a good fortune")
    expected = hf_greedy(ref, prompt, 20, 48)[len(prompt) :]
    if bpe.eos_id in expected:
        expected = expected[: expected.index(bpe.eos_id)]
    assert text == bpe.decode(expected)

    run = tmp_path / "run"
    assert cli_main(["convert", str(hf_dir), str(run), "--to", "lmlab"]) == 0
    assert (run / "config.yaml").is_file() and (run / "checkpoints/step_00000000/model.safetensors").is_file()
    q = lmlab.load(run)
    x = torch.randint(0, bpe.vocab_size, (1, 48))
    with torch.no_grad():
        assert torch.equal(q.model(x), p.model(x))

    back = tmp_path / "back"
    assert cli_main(["convert", str(run), str(back), "--to", "hf"]) == 0
    config = json.loads((back / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    with torch.no_grad():
        assert (
            transformers.AutoModelForCausalLM.from_pretrained(back)(x).logits - ref(x).logits
        ).abs().max() <= 1e-4

    assert cli_main(["convert", str(hf_dir), str(back), "--to", "hf"]) == 2  # refuses a non-empty target
    assert "not an empty directory" in capsys.readouterr().err


class _Evil:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_unsafe_bin_is_refused(tmp_path):
    ref = hf_model(vocab_size=60, n_positions=16, n_embd=16, n_layer=1, n_head=1)
    ref.config.save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    torch.save(
        {"transformer.wte.weight": torch.zeros(60, 16), "payload": _Evil(marker)},
        tmp_path / "pytorch_model.bin",
    )
    with pytest.raises(CheckpointError, match="execute arbitrary code"):
        import_hf(tmp_path)
    assert not marker.exists()

    # a plain state dict in pytorch_model.bin is fine
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model, _ = import_hf(tmp_path)
    x = torch.randint(0, 60, (1, 16))
    with torch.no_grad():
        assert (model(x) - ref(x).logits).abs().max() <= 1e-4


def test_unsupported_settings_are_named():
    base = dict(model_type="gpt2", vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=1)
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        gpt_config_from_hf({**base, "scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(ConfigError, match="activation_function='silu'"):
        gpt_config_from_hf({**base, "activation_function": "silu"})
    assert gpt_config_from_hf({**base, "reorder_and_upcast_attn": True}).activation == "gelu_tanh"
    model = GPT(
        GPTConfig(
            vocab_size=50,
            block_size=16,
            n_layer=1,
            n_head=2,
            n_embd=16,
            pos_embedding="rope",
            norm="rmsnorm",
            activation="swiglu",
        )
    )
    with pytest.raises(ConfigError, match="pos_embedding='rope'.*norm='rmsnorm'.*activation='swiglu'"):
        export_hf(model, None, "unused")


def test_unsupported_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ConfigError, match="model_type 't5' is not supported yet"):
        import_hf(tmp_path)
    with pytest.raises(ConfigError, match="t5"):
        lmlab.load(tmp_path)


def test_state_dict_round_trip_and_key_errors():
    ref = hf_model(vocab_size=70, n_positions=16, n_embd=24, n_layer=2, n_head=3, tie_word_embeddings=False)
    ours = state_dict_from_hf(ref.state_dict())
    back = state_dict_to_hf(
        ours,
        GPTConfig(
            vocab_size=70,
            block_size=16,
            n_layer=2,
            n_head=3,
            n_embd=24,
            activation="gelu_tanh",
            tie_weights=False,
        ),
    )
    hf_sd = ref.state_dict()
    assert back.keys() == hf_sd.keys() and all(torch.equal(back[k], hf_sd[k]) for k in back)
    # GPT2Model checkpoints (no transformer. prefix) and old causal-mask buffers are accepted
    bare = {k.removeprefix("transformer."): v for k, v in hf_sd.items() if k != "lm_head.weight"}
    bare["h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    assert state_dict_from_hf(bare)["lm_head.weight"] is bare["wte.weight"]
    with pytest.raises(CheckpointError, match="unexpected tensors.*h.0.crossattention"):
        state_dict_from_hf({**bare, "h.0.crossattention.c_attn.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="lacks tensors for: blocks.1.norm1.weight"):
        state_dict_from_hf({k: v for k, v in bare.items() if k != "h.1.ln_1.weight"})


def test_sharded_safetensors(tmp_path):
    ref = hf_model(vocab_size=200, n_positions=32, n_embd=32, n_layer=2, n_head=2, tie_word_embeddings=False)
    ref.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, _ = import_hf(tmp_path)
    x = torch.randint(0, 200, (1, 32))
    with torch.no_grad():
        assert (model(x) - ref(x).logits).abs().max() <= 1e-4
