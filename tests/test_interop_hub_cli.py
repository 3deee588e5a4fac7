"""Hugging Face directories through the CLI and lmlab.load: hub names (offline errors, a cached snapshot),
`lmlab eval` / `lmlab generate` on a GPT-2 directory, the README's convert-and-load snippet, and the
config rules for BERT runs (family 'bert' with task 'lm' is refused; task 'mlm' pretrains: test_mlm.py)."""

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

import lmlab  # noqa: E402
from lmlab.config import RunConfig, TokenizerConfig, build_config  # noqa: E402
from lmlab.errors import CheckpointError, ConfigError  # noqa: E402
from lmlab.interop import export_hf, hub  # noqa: E402
from lmlab.interop.hub import looks_like_hub_name  # noqa: E402
from lmlab.models.bert import BertConfig  # noqa: E402
from lmlab.models.gpt import GPT, GPTConfig  # noqa: E402
from lmlab.runs import train_run  # noqa: E402
from lmlab.tokenizers import BPETokenizer, CharTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ASSET = Path(lmlab.__file__).parent / "assets" / "tinyshakespeare.txt"
TEXT = ASSET.read_text(encoding="utf-8")[:6000]




@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT2LMHeadModel with a byte-level BPE, saved by transformers itself."""
    d = tmp_path_factory.mktemp("gpt2")
    bpe = BPETokenizer.train([TEXT], vocab_size=300)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=bpe.vocab_size,
        n_positions=48,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.1,
        bos_token_id=bpe.eos_id,
        eos_token_id=bpe.eos_id,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d)
    fast = transformers.GPT2TokenizerFast(tokenizer_object=bpe.tokenizer, eos_token="<|endoftext|>")
    fast.save_pretrained(d)
    return d


# --------------------------------------------------------------------------------------------------
# hub names


@pytest.mark.parametrize("name", ["gpt2", "openai-community/gpt2", "bert-base-uncased", "org/name.v2"])
def test_hub_names(name):
    assert looks_like_hub_name(name)


@pytest.mark.parametrize("name", ["./gpt2", "/abs/dir", "a/b/c", "runs/", "..", "a/../b", "x--y", "~/m"])
def test_not_hub_names(name):
    assert not looks_like_hub_name(name)


class LocalEntryNotFoundError(Exception):
    pass


class RepositoryNotFoundError(Exception):
    pass


def fake_download(calls: list, result=None, error: Exception | None = None):
    def download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if error is not None:
            raise error
        return str(result)

    return download


def test_hub_name_offline_says_which_local_path(monkeypatch, cli, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls: list = []
    monkeypatch.setattr(hub, "_snapshot_download", fake_download(calls, error=LocalEntryNotFoundError("x")))
    with pytest.raises(CheckpointError) as e:
        lmlab.load("openai-community/gpt2")
    msg = str(e.value)
    assert "no local directory" in msg and "'openai-community/gpt2'" in msg
    assert "cannot be reached offline (HF_HUB_OFFLINE=1)" in msg
    assert "config.json + model.safetensors" in msg
    assert "huggingface-cli download openai-community/gpt2 --local-dir DIR" in msg
    # offline: only the local cache is looked at, and only safetensors weights would be fetched
    assert calls[0][0] == "openai-community/gpt2" and calls[0][1]["local_files_only"] is True
    patterns = calls[0][1]["allow_patterns"]
    assert "config.json" in patterns and "model.safetensors" in patterns
    assert not any(p.endswith(".bin") for p in patterns)

    rc, _, err = cli("convert", "gpt2", tmp_path / "out", "--to", "lmlab")
    assert rc == 2 and "huggingface-cli download gpt2 --local-dir DIR" in err
    assert not (tmp_path / "out").exists()


def test_hub_name_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if not installed
    called: list = []
    monkeypatch.setattr(hub, "_snapshot_download", fake_download(called))
    with pytest.raises(CheckpointError, match=re.escape("pip install 'lmlab[hf]'")) as e:
        lmlab.load("gpt2")
    assert "huggingface_hub is not installed" in str(e.value) and "--local-dir DIR" in str(e.value)
    assert not called


def test_hub_name_network_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    calls: list = []
    monkeypatch.setattr(hub, "_snapshot_download", fake_download(calls, error=ConnectionError("no route")))
    with pytest.raises(CheckpointError, match=r"could not be reached \(ConnectionError: no route\)"):
        lmlab.load("gpt2")
    assert calls[0][1]["local_files_only"] is False
    monkeypatch.setattr(hub, "_snapshot_download", fake_download([], error=RepositoryNotFoundError("404")))
    with pytest.raises(CheckpointError, match="has no model 'org/typo' that you can access"):
        lmlab.load("org/typo")


def test_hub_name_from_cache(monkeypatch, gpt2_dir, tmp_path):
    """A snapshot that huggingface_hub finds (here: a fake one) is loaded like a local directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "_snapshot_download", fake_download([], result=gpt2_dir))
    p = lmlab.load("someone/tiny-gpt2")
    assert isinstance(p.model, GPT) and p.config.model.block_size == 48
    assert p.generate("To be", max_new_tokens=5, temperature=0) == lmlab.load(gpt2_dir).generate(
        "To be", max_new_tokens=5, temperature=0
    )
    lonely = tmp_path / "no_weights"
    lonely.mkdir()
    (lonely / "config.json").write_text('{"model_type": "gpt2"}')
    monkeypatch.setattr(hub, "_snapshot_download", fake_download([], result=lonely))
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        lmlab.load("someone/old-model")


def test_missing_path_that_is_no_hub_name(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "_snapshot_download", None)  # never called
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint"):
        lmlab.load(tmp_path / "absent" / "run")


# --------------------------------------------------------------------------------------------------
# eval and generate on a Hugging Face GPT-2 directory


def test_eval_hf_dir(cli, gpt2_dir, tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT[:2000], encoding="utf-8")
    rc, out, err = cli("eval", gpt2_dir, "--data", data, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert set(result) == {"loss", "perplexity", "tokens"} and result["tokens"] > 100
    # the same as transformers' mean next-token loss over the windows lmlab uses (48 tokens)
    ref = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    ids = lmlab.load(gpt2_dir).tokenizer.encode(TEXT[:2000])
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, 48):
            x = torch.tensor([ids[i : i + 49]])
            if x.size(1) < 2:
                continue
            logits = ref(x[:, :-1]).logits
            total += torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            n += x.size(1) - 1
    assert result["tokens"] == n and abs(result["loss"] - total / n) <= 1e-4

    rc, _, err = cli("eval", gpt2_dir)
    assert rc == 2 and "Hugging Face model directory" in err and "--data FILE" in err


def test_generate_hf_dir(gpt2_dir, cli):
    rc, out, err = cli(
        "generate", gpt2_dir, "--prompt", "To be", "--max-new-tokens", "12", "--temperature", "0"
    )
    assert rc == 0, err
    p = lmlab.load(gpt2_dir)
    ref = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    prompt = p.tokenizer.encode("To be")
    with torch.no_grad():
        ids = ref.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )[0]
    new = ids[len(prompt) :].tolist()
    if p.tokenizer.eos_id in new:
        new = new[: new.index(p.tokenizer.eos_id)]
    assert out == "To be" + p.tokenizer.decode(new) + "\n"


# --------------------------------------------------------------------------------------------------
# the README's snippet, literally


def readme_snippet(lang: str, after: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m is not None
    return m.group(1)


def test_readme_convert_and_load_with_transformers(capsys, monkeypatch, tmp_path, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    rc, _, err = cli(
        "train",
        "shakespeare-char",
        "model.n_layer=1",
        "model.n_embd=32",
        "model.n_head=2",
        "train.batch_size=4",
        "train.max_steps=2",
        "train.progress=false",
        "train.device=cpu",
        "data.path=text.txt",
        "--out",
        "runs/shakes",
    )
    assert rc == 0, err
    bash = readme_snippet("bash", "## Hugging Face interop")
    assert bash.strip() == ".venv/bin/lmlab convert runs/shakes hf/shakes --to hf"
    rc, _, err = cli(*bash.split()[1:])
    assert rc == 0, err

    python = readme_snippet("python", "## Hugging Face interop")
    assert len(python.strip().splitlines()) == 3
    torch.manual_seed(0)
    exec(compile(python, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) > len("ROMEO:") + 10

    # and the logits are lmlab's
    m = transformers.AutoModelForCausalLM.from_pretrained("hf/shakes").eval()
    tok = transformers.AutoTokenizer.from_pretrained("hf/shakes")
    p = lmlab.load("runs/shakes")
    batch = tok("ROMEO: What say you?", return_tensors="pt")
    assert batch["input_ids"][0].tolist() == p.tokenizer.encode("ROMEO: What say you?")
    with torch.no_grad():
        assert (m(**batch).logits - p.model(batch["input_ids"])).abs().max() <= 1e-4


# --------------------------------------------------------------------------------------------------
# BERT runs in the config


def test_bert_run_config_rules(tmp_path):
    bert = {"family": "bert", "model": {"vocab_size": 50, "n_layer": 1, "n_head": 1, "d_model": 8}}
    with pytest.raises(ConfigError, match="bidirectional encoder.*next-token prediction"):
        build_config(bert)  # task defaults to lm
    with pytest.raises(ConfigError, match="task 'mlm' .* needs family 'bert'"):
        build_config({"task": "mlm"})
    cfg = build_config({**bert, "task": "mlm", "tokenizer": {"kind": "wordpiece"}})
    assert cfg.task == "mlm" and cfg.tokenizer.kind == "wordpiece"
    with pytest.raises(ConfigError, match="model.vocab_size=50 is smaller than the tokenizer's"):
        train_run(cfg, tmp_path / "mlm")  # masked-LM pretraining runs (tests/test_mlm.py)
    direct = RunConfig(family="bert", model=BertConfig(vocab_size=50), tokenizer=TokenizerConfig())
    with pytest.raises(ConfigError, match="bidirectional encoder"):
        train_run(direct, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_train_mlm_errors(tmp_path, cli):
    recipe = tmp_path / "bert.yaml"
    (tmp_path / "empty").mkdir()
    recipe.write_text(f"family: bert\ntask: mlm\ntokenizer: {{kind: wordpiece}}\nmodel: {{n_layer: 1}}\n"
                      f"data: {{path: {tmp_path / 'empty'}}}\n")
    rc, _, err = cli("train", recipe, "--out", tmp_path / "run")
    assert rc == 2 and "no .txt or .txt.gz files found under" in err and "empty" in err
    rc, _, err = cli(
        "train",
        "shakespeare-char",
        "tokenizer.kind=wordpiece",
        "train.max_steps=1",
        "--out",
        tmp_path / "gpt",
    )
    assert rc == 2 and "wordpiece" in err


def test_export_needs_no_token_type_ids(tmp_path):
    """A character tokenizer exported as a PreTrainedTokenizerFast must not hand GPT-2 token_type_ids
    (transformers 4 did by default, and GPT-2 adds them to its input as token embeddings)."""
    char = CharTokenizer.train([TEXT])
    torch.manual_seed(0)
    export_hf(
        GPT(GPTConfig(vocab_size=char.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=16)),
        char,
        tmp_path,
    )
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert list(tok.model_input_names) == ["input_ids", "attention_mask"]
    assert "token_type_ids" not in tok("hello there")
