"""The Python API: lmlab.load(RUN_DIR) -> Pipeline (model, tokenizer, generate, evaluate), checkpoint
fallback and clear errors, and attention maps (explain.py). One tiny run is trained per module."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.config import load_config
from lmlab.errors import CheckpointError, ConfigError, DataError, GenerationError, LmlabError
from lmlab.explain import plot_self_attention, self_attention
from lmlab.models import build_model
from lmlab.runs import train_run

ASSET = Path(lmlab.__file__).parent / "assets" / "tinyshakespeare.txt"
TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=32",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.progress=false",
]


def small_text(tmp: Path, chars: int = 20_000, name: str = "small.txt") -> Path:
    path = tmp / name
    path.write_text(ASSET.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny char-level run: 20 steps, checkpoints at 10 and 20."""
    tmp = tmp_path_factory.mktemp("pipeline")
    text = small_text(tmp)
    cfg = load_config(
        "shakespeare-char",
        TINY + [f"data.path={text}", "train.max_steps=20", "train.checkpoint_interval=10"],
    )
    train_run(cfg, tmp / "run")
    return tmp / "run"


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    """A private copy of the run, free to damage."""
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture(scope="module")
def pipe(run):
    return lmlab.load(run)


def ascii_stop(text: str, start: int) -> str:
    """A 2-character stop string of ``text`` at or after ``start`` made of printable ASCII (not a
    U+FFFD from a byte token, which can change while a multi-byte character is being generated)."""
    for i in range(start, len(text) - 1):
        if all(c.isascii() and c.isprintable() for c in text[i : i + 2]):
            return text[i : i + 2]
    pytest.skip("the sample holds no ASCII pair to stop at")


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


# ---------------------------------------------------------------------------------------------------
# load, model, tokenizer


def test_load_gives_model_tokenizer_and_config(pipe, run):
    assert isinstance(pipe, lmlab.Pipeline)
    assert pipe.checkpoint == ckpt(run, 20)
    assert pipe.config.model.n_layer == 1 and pipe.config.train.max_steps == 20
    assert not pipe.model.training
    vocab = pipe.config.model.vocab_size
    assert vocab == pipe.tokenizer.vocab_size
    ids = torch.tensor([pipe.tokenizer.encode("To be, or not"), pipe.tokenizer.encode("First Citizen")])
    with torch.no_grad():
        logits = pipe.model(ids)
    assert logits.shape == (2, 13, vocab) and logits.dtype == torch.float32
    text = "ROMEO: héllo ☃"  # é and ☃ are not in the training text: byte fallback
    assert pipe.tokenizer.decode(pipe.tokenizer.encode(text)) == text


def test_load_a_checkpoint_directory(run, pipe):
    p10 = lmlab.load(ckpt(run, 10))
    assert p10.checkpoint == ckpt(run, 10) and p10.path == run
    p20 = lmlab.load(ckpt(run, 20))
    for a, b in zip(p20.model.state_dict().values(), pipe.model.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(p10.model.state_dict().values(),
                                                      p20.model.state_dict().values()))
    assert lmlab.load(run / "checkpoints").checkpoint == ckpt(run, 20)  # the checkpoints folder = the run


# ---------------------------------------------------------------------------------------------------
# generate


def test_greedy_generation_is_deterministic(pipe):
    a = pipe.generate("ROMEO:", max_new_tokens=30, temperature=0)
    b = pipe.generate("ROMEO:", max_new_tokens=30, temperature=0, seed=123)
    assert isinstance(a, str) and a == b
    assert len(pipe.tokenizer.encode(a)) == 30


def test_seed_makes_sampling_reproducible(pipe):
    a = pipe.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=1)
    b = pipe.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=1)
    c = pipe.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=2)
    assert a == b and a != c
    d = pipe.generate("ROMEO:", max_new_tokens=40, top_k=5, top_p=0.9, temperature=0.8, seed=1)
    assert d == pipe.generate("ROMEO:", max_new_tokens=40, top_k=5, top_p=0.9, temperature=0.8, seed=1)


def test_stop_strings_and_streaming(pipe):
    full = pipe.generate("First", max_new_tokens=40, temperature=1.0, seed=3)
    stop = ascii_stop(full, 10)
    expected = full[: full.find(stop)]
    pieces: list[str] = []
    out = pipe.generate("First", max_new_tokens=40, seed=3, stop=[stop], stream=pieces.append)
    assert out == expected and "".join(pieces) == out
    assert pipe.generate("First", max_new_tokens=40, temperature=1.0, seed=3, stop=stop) == expected  # a str
    pieces.clear()
    assert pipe.generate("First", max_new_tokens=40, temperature=1.0, seed=3, stream=pieces.append) == full
    assert "".join(pieces) == full


def test_prompt_longer_than_the_context_slides(pipe):
    prompt = ASSET.read_text(encoding="utf-8")[:200]  # 200 tokens, context 32
    with pytest.warns(UserWarning, match="context is 32"):
        out = pipe.generate(prompt, max_new_tokens=50, temperature=0)
    assert len(pipe.tokenizer.encode(out)) == 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same_window = pipe.generate(prompt[-32:], max_new_tokens=50, temperature=0)
    assert out == same_window  # only the last block_size tokens matter


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": -1.0},
        {"top_p": 2.0},
        {"top_p": 0.0},
        {"top_k": -1},
        {"max_new_tokens": -5},
        {"stop": [""]},
    ],
)
def test_bad_generation_options_raise_generation_error(pipe, options):
    with pytest.raises(GenerationError):
        pipe.generate("ROMEO:", **options)


def test_empty_prompt_is_a_clear_error(pipe):
    with pytest.raises(GenerationError, match="empty prompt"):
        pipe.generate("")
    with pytest.raises(GenerationError, match="string"):
        pipe.generate(123)


# ---------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_on_the_validation_split(pipe, run):
    import numpy as np

    from lmlab.data import TokenData

    out = pipe.evaluate()
    assert set(out) >= {"loss", "perplexity", "tokens"}
    assert out["perplexity"] == pytest.approx(np.exp(out["loss"]))
    assert out["tokens"] == len(TokenData.open(run / "data").val) - 1
    # the Trainer's final val_loss used the same model and the same split
    from lmlab.train import read_metrics

    assert read_metrics(run)[-1]["val_loss"] == pytest.approx(out["loss"], rel=1e-5)
    assert pipe.evaluate(batch_size=1)["loss"] == pytest.approx(out["loss"], rel=1e-5)


def test_evaluate_on_a_file_and_a_folder(pipe, tmp_path):
    text = ASSET.read_text(encoding="utf-8")[-3000:]
    f = tmp_path / "held_out.txt"
    f.write_text(text, encoding="utf-8")
    out = pipe.evaluate(str(f))
    assert out["tokens"] == len(pipe.tokenizer.encode(text)) - 1
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text(text[:1000], encoding="utf-8")
    (folder / "b.txt").write_text(text[1000:], encoding="utf-8")
    both = pipe.evaluate(folder)
    assert both["tokens"] == len(pipe.tokenizer.encode(text[:1000] + "\n\n" + text[1000:])) - 1


def test_evaluate_errors(pipe, tmp_path):
    with pytest.raises(DataError, match="not found"):
        pipe.evaluate(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        pipe.evaluate(tmp_path / "empty.txt")
    (tmp_path / "one.txt").write_text("a")
    with pytest.raises(DataError, match="at least 2"):
        pipe.evaluate(tmp_path / "one.txt")
    with pytest.raises(ConfigError, match="batch_size"):
        pipe.evaluate(batch_size=0)


def test_evaluate_without_the_token_cache(run_copy):
    shutil.rmtree(run_copy / "data")
    p = lmlab.load(run_copy)
    with pytest.raises(DataError, match="--data"):
        p.evaluate()


# ---------------------------------------------------------------------------------------------------
# corrupt, truncated and missing checkpoints


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damaged", ["model.safetensors", "trainer_state.pt"])
def test_run_dir_falls_back_past_a_truncated_checkpoint(run_copy, damaged):
    truncate(ckpt(run_copy, 20) / damaged)
    with pytest.warns(UserWarning, match=r"step_00000020.*corrupt.*using .*step_00000010"):
        p = lmlab.load(run_copy)
    assert p.checkpoint == ckpt(run_copy, 10)
    with pytest.raises(CheckpointError) as e:  # loaded directly: a clear error naming the file
        lmlab.load(ckpt(run_copy, 20))
    assert damaged in str(e.value) and "truncated or corrupt" in str(e.value)


def test_garbage_checkpoint_file(run_copy):
    (ckpt(run_copy, 20) / "model.safetensors").write_bytes(b"\x00" * 100 + b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        lmlab.load(ckpt(run_copy, 20))
    with pytest.warns(UserWarning, match="corrupt"):
        assert lmlab.load(run_copy).checkpoint == ckpt(run_copy, 10)


def test_every_checkpoint_corrupt(run_copy):
    for step in (10, 20):
        truncate(ckpt(run_copy, step) / "model.safetensors")
    with pytest.raises(CheckpointError, match="every checkpoint"):
        lmlab.load(run_copy)


def test_leftover_tmp_checkpoint_is_ignored(run_copy):
    shutil.copytree(ckpt(run_copy, 20), run_copy / "checkpoints" / "step_00000030.tmp")
    truncate(run_copy / "checkpoints" / "step_00000030.tmp" / "model.safetensors")
    assert lmlab.load(run_copy).checkpoint == ckpt(run_copy, 20)
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        lmlab.load(run_copy / "checkpoints" / "step_00000030.tmp")


def test_missing_weights_in_a_checkpoint_directory(run_copy):
    (ckpt(run_copy, 20) / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        lmlab.load(ckpt(run_copy, 20))


def test_weights_only_checkpoint_directory_loads(run_copy):
    (ckpt(run_copy, 20) / "trainer_state.pt").unlink()  # not needed for inference
    assert lmlab.load(ckpt(run_copy, 20)).checkpoint == ckpt(run_copy, 20)


def test_checkpoint_of_another_model_is_a_clear_error(run_copy):
    cfg = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(cfg.replace("n_embd: 32", "n_embd: 64"))
    with pytest.raises(CheckpointError, match="does not match the model"):
        lmlab.load(run_copy)


def test_no_checkpoint_and_not_a_run(tmp_path, run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        lmlab.load(run_copy)
    with pytest.raises(CheckpointError, match="no such"):
        lmlab.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an lmlab run"):
        lmlab.load(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        lmlab.load(tmp_path / "file.txt")


def test_corrupt_run_config(run_copy):
    (run_copy / "config.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="config.yaml"):
        lmlab.load(run_copy)
    (run_copy / "config.yaml").write_text("model:\n  n_layers: 2\n")
    with pytest.raises(ConfigError, match="model.n_layers"):
        lmlab.load(run_copy)


def test_missing_tokenizer(run_copy):
    (run_copy / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer"):
        lmlab.load(run_copy)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(run):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        lmlab.load(run, device="cuda")
    with pytest.raises(ConfigError, match="not a device"):
        lmlab.load(run, device="gpu0")


def test_every_error_is_an_lmlab_error():
    for cls in (CheckpointError, ConfigError, DataError, GenerationError):
        assert issubclass(cls, LmlabError)


# ---------------------------------------------------------------------------------------------------
# attention maps


def test_attention_of_a_fused_model_matches_an_eager_one(pipe):
    assert pipe.config.model.attention == "fused"  # the default: weights come from the eager path
    text = "To be, or not to be"
    weights, labels = self_attention(pipe, text, layer=0, head=1)
    t = len(pipe.tokenizer.encode(text))
    assert weights.shape == (t, t) and labels == list(text)
    assert torch.allclose(weights.sum(-1), torch.ones(t), atol=1e-5)
    assert torch.all(weights.triu(1) == 0)  # causal

    eager_cfg = type(pipe.config.model)(**{**vars(pipe.config.model), "attention": "eager"})
    eager = build_model("gpt", eager_cfg)
    eager.load_state_dict(pipe.model.state_dict())
    eager.eval()
    ids = torch.tensor([pipe.tokenizer.encode(text)])
    with torch.no_grad():
        logits_w, att = pipe.model(ids, need_weights=True)
        logits_e, att_e = eager(ids, need_weights=True)
        logits_f = pipe.model(ids)
    torch.testing.assert_close(logits_w, logits_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_e, logits_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(att[0][0, 1], weights)
    torch.testing.assert_close(att_e[0], att[0])

    mean, _ = self_attention(pipe, text)  # last layer, mean over heads
    torch.testing.assert_close(mean, att[-1][0].mean(0))


def test_attention_plot(pipe, tmp_path):
    out = plot_self_attention(pipe, "Hello there", tmp_path / "maps" / "map.png", layer=-1, head=0)
    assert out == tmp_path / "maps" / "map.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_errors(pipe, tmp_path):
    with pytest.raises(LmlabError, match="--layer 1 out of range"):
        self_attention(pipe, "abc", layer=1)
    with pytest.raises(LmlabError, match="--head 2 out of range"):
        self_attention(pipe, "abc", head=2)
    with pytest.raises(LmlabError, match="empty"):
        self_attention(pipe, "")
    with pytest.raises(LmlabError, match="extensions"):
        plot_self_attention(pipe, "abc", tmp_path / "map.xyz")
    with pytest.warns(UserWarning, match="last 32"):
        weights, labels = self_attention(pipe, "x" * 50)
    assert weights.shape == (32, 32)
