"""Translation end to end: `lmlab train` on sentence pairs (a tiny Transformer on 40 pairs written
here), `lmlab translate` (a string, a file), `lmlab eval` (BLEU / chrF JSON), checkpoint averaging,
cross-attention maps, the Python API (`lmlab.load(RUN).translate`), the bundled recipes, and clear
errors for bad input. A 3-step Multi30k run when the shared data is there."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab.checkpoint import average_checkpoints
from lmlab.cli import main
from lmlab.config import build_config, load_config, load_raw
from lmlab.data.parallel import default_data_root
from lmlab.errors import CheckpointError, ConfigError, GenerationError
from lmlab.models import build_model
from lmlab.train import read_metrics
from lmlab.translate import TranslationPipeline

SUBJECTS = [("a dog", "ein hund"), ("a cat", "eine katze"), ("the man", "der mann"),
            ("the woman", "die frau"), ("a child", "ein kind")]
VERBS = [("runs", "rennt"), ("sleeps", "schläft"), ("eats", "isst"), ("sings", "singt"),
         ("reads", "liest"), ("swims", "schwimmt"), ("plays", "spielt"), ("jumps", "springt")]
PAIRS = [(f"{se} {ve}", f"{sd} {vd}") for se, sd in SUBJECTS for ve, vd in VERBS]  # 40 pairs
RECIPES = ("multi30k-en-de", "multi30k-de-en", "tatoeba-zh-en")

TINY_MODEL = [
    "model.d_model=32",
    "model.n_heads=2",
    "model.n_encoder_layers=1",
    "model.n_decoder_layers=1",
    "model.d_ff=64",
    "model.max_len=32",
    "data.max_len=32",
]
TINY_TRAIN = [
    "train.batch_size=256",
    "train.warmup_steps=2",
    "train.log_interval=1",
    "train.eval_interval=0",
    "train.progress=false",
    "train.precision=fp32",
    "train.device=cpu",
]



def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path



@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """train (32 pairs), valid and test (the other 8, and 4 of them) as aligned files."""
    d = tmp_path_factory.mktemp("pairs")
    train, valid = [p for i, p in enumerate(PAIRS) if i % 5], PAIRS[::5]
    files = {}
    for split, pairs in (("train", train), ("valid", valid), ("test", valid[:4])):
        files[f"{split}_src"] = write_lines(d / f"{split}.en", [s for s, _ in pairs])
        files[f"{split}_tgt"] = write_lines(d / f"{split}.de", [t for _, t in pairs])
    return files


@pytest.fixture(scope="module")
def train_args(corpus) -> list[str]:
    """`lmlab train` arguments: the multi30k-en-de recipe on the files, joint BPE of 300 tokens,
    6 steps with checkpoints at 2, 4 and 6 (all kept)."""
    return ["multi30k-en-de", "data.corpus=files", *(f"data.{k}={v}" for k, v in corpus.items()),
            "tokenizer.vocab_size=300", *TINY_MODEL, *TINY_TRAIN, "train.max_steps=6",
            "train.checkpoint_interval=2", "train.keep_checkpoints=3", "train.bleu_sentences=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_args) -> Path:
    out = tmp_path_factory.mktemp("translation") / "run"
    assert main(["train", *train_args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def pipe(run) -> TranslationPipeline:
    p = lmlab.load(run)
    assert isinstance(p, TranslationPipeline)
    return p


# ---------------------------------------------------------------------------------------------------
# train


def test_train_writes_a_translation_run(run):
    for name in ("config.yaml", "tokenizer.json", "metrics.jsonl", "loss.png"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000002", "step_00000004", "step_00000006"]
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"val_loss", "val_bleu", "val_chrf"} <= set(records[-1])
    cfg = lmlab.load(run).config
    assert cfg.task == "translation" and cfg.family == "transformer"
    assert cfg.model.src_vocab_size == cfg.model.tgt_vocab_size == 300 + 3  # tokenizer + pad, bos, eos
    assert Path(cfg.data.train_src).is_absolute()


def test_resume_continues_the_run(cli, run, tmp_path, train_args):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    args = [a for a in train_args if not a.startswith("train.max_steps=")]
    rc, out, err = cli("train", *args, "train.max_steps=8", "--out", copy)
    assert rc == 0, err
    assert "resuming from" in err and "step_00000006" in err and "done: step 8" in out
    rc, _, err = cli("train", *args, "train.max_steps=8", "model.d_model=64", "--out", copy)
    assert rc == 2 and "model.d_model" in err


# ---------------------------------------------------------------------------------------------------
# translate


def test_translate_a_string(cli, run, pipe):
    rc, out, err = cli("translate", run, "a dog runs")
    assert rc == 0, err
    assert out.count("\n") == 1
    assert out.rstrip("\n") == pipe.translate("a dog runs")
    rc, out, _ = cli("translate", run, "a dog runs", "--beam", "1", "--max-len", "3")
    assert rc == 0 and out.rstrip("\n") == pipe.translate("a dog runs", beam=1, max_len=3)


def test_python_api_translate(pipe):
    one = pipe.translate("a cat sleeps")
    assert isinstance(one, str)
    many = pipe.translate(["a cat sleeps", "", "the man reads", "a cat sleeps"], beam=2)
    assert isinstance(many, list) and len(many) == 4 and many[1] == "" and many[0] == many[3]
    assert pipe.translate(["a cat sleeps"], beam=4) == [one]  # batched = one at a time
    greedy = pipe.translate(["a cat sleeps", "the man reads"], beam=1, batch_size=1)
    assert all(isinstance(t, str) for t in greedy)
    ids = pipe.translate_ids(["a cat sleeps"], beam=1, max_len=5)[0]
    assert len(ids) <= 5 and all(0 <= i < pipe.tokenizer.vocab_size for i in ids)  # no special ids
    with pytest.raises(GenerationError, match="beam"):
        pipe.translate("a cat", beam=0)
    with pytest.raises(GenerationError, match="translate"):
        pipe.generate("a cat")


def test_translate_a_file(cli, run, pipe, tmp_path):
    src = write_lines(tmp_path / "in.en", ["a dog runs", "", "the woman swims"])
    out_file = tmp_path / "out" / "hyp.de"
    rc, out, err = cli("translate", run, "--input", src, "--output", out_file, "--beam", "2")
    assert rc == 0, err
    assert out == "" and "1 empty lines left empty" in err
    lines = out_file.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 4  # three lines, each ended by a newline
    assert lines[:3] == pipe.translate(["a dog runs", "", "the woman swims"], beam=2)
    rc, out, _ = cli("translate", run, "--input", src)  # to stdout
    assert rc == 0 and out.count("\n") == 3


def test_translate_usage_errors(cli, run, tmp_path):
    rc, _, err = cli("translate", run)
    assert rc == 2 and "lmlab: error:" in err and "--input" in err
    rc, _, err = cli("translate", run, "a dog", "--input", tmp_path / "x")
    assert rc == 2 and "not both" in err
    rc, _, err = cli("translate", run, "--input", tmp_path / "missing.txt")
    assert rc == 1 and "lmlab: error:" in err and "missing.txt" in err
    rc, _, err = cli("generate", run, "--prompt", "a dog")
    assert rc == 2 and "lmlab translate" in err


# ---------------------------------------------------------------------------------------------------
# eval


def test_eval_json_on_a_file_pair_and_splits(cli, run, corpus, pipe):
    rc, out, err = cli("eval", run, "--src", corpus["valid_src"], "--ref", corpus["valid_tgt"],
                             "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert set(result) == {"bleu", "chrf", "signature"}
    assert 0.0 <= result["bleu"] <= 100.0 and 0.0 <= result["chrf"] <= 100.0
    assert "tok:13a" in result["signature"] and "nrefs:1" in result["signature"]
    scores = pipe.evaluate(src=corpus["valid_src"], ref=corpus["valid_tgt"])
    assert scores["bleu"] == pytest.approx(result["bleu"]) and scores["sentences"] == 8
    # the run's own splits: test (the default when the run has one), valid; greedy with --beam 1
    rc, out, _ = cli("eval", run, "--split", "test", "--json", "--beam", "1")
    assert rc == 0 and set(json.loads(out)) == {"bleu", "chrf", "signature"}
    assert pipe.evaluate()["sentences"] == 4 and pipe.evaluate("valid")["sentences"] == 8
    rc, out, _ = cli("eval", run, "--split", "valid")
    assert rc == 0 and "bleu:" in out and "chrf:" in out and "sentences: 8" in out


def test_eval_errors(cli, run, corpus, tmp_path):
    short = write_lines(tmp_path / "short.de", ["ein hund rennt"] * 3)
    rc, _, err = cli("eval", run, "--src", corpus["valid_src"], "--ref", short)
    assert rc == 2 and err.startswith("lmlab: error:")
    assert str(corpus["valid_src"]) in err and str(short) in err and "8 lines" in err and "has 3" in err
    rc, _, err = cli("eval", run, "--src", corpus["valid_src"])
    assert rc == 2 and "--ref" in err
    rc, _, err = cli("eval", run, "--split", "nope")
    assert rc == 2 and "unknown split" in err
    rc, _, err = cli("eval", run, "--data", corpus["valid_src"])
    assert rc == 2 and "--split" in err


# ---------------------------------------------------------------------------------------------------
# checkpoint averaging


def test_average_checkpoints(cli, run, pipe):
    state = average_checkpoints(run, 2)
    a, b = (load_file(str(run / "checkpoints" / f"step_{s:08d}" / "model.safetensors")) for s in (4, 6))
    assert state.keys() == a.keys()
    for name in a:
        torch.testing.assert_close(state[name], (a[name].double() + b[name].double()).div(2).float())
    p = lmlab.load(run, average=2)
    assert [c.name for c in p.averaged] == ["step_00000004", "step_00000006"]
    rc, out, err = cli("translate", run, "a dog runs", "--average", "2")
    assert rc == 0 and out.rstrip("\n") == p.translate("a dog runs")
    assert "averaged the weights of 2 checkpoints" in err
    rc, out, err = cli("eval", run, "--split", "test", "--average", "3", "--json")
    assert rc == 0 and "bleu" in json.loads(out)
    rc, _, err = cli("translate", run, "a dog runs", "--average", "5")
    assert rc == 2 and "holds 3 usable" in err and "keep_checkpoints" in err
    with pytest.raises(CheckpointError, match=">= 1"):
        average_checkpoints(run, 0)
    # averaging up to an explicit checkpoint
    upto = lmlab.load(run / "checkpoints" / "step_00000004", average=2)
    assert [c.name for c in upto.averaged] == ["step_00000002", "step_00000004"]


# ---------------------------------------------------------------------------------------------------
# attention


def test_cross_attention_map(cli, run, tmp_path):
    png = tmp_path / "map.png"
    rc, out, err = cli("attention", run, "a dog runs", "--out", png, "--head", "1")
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in out
    from lmlab.explain import cross_attention

    weights, rows, cols = cross_attention(lmlab.load(run), "a dog runs", layer=0)
    assert weights.shape == (len(rows), len(cols)) and cols[-1] == "</s>"
    assert rows[-1] == "</s>" or len(rows) == 32  # EOS, or cut at the model's 32 positions
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(rows)))  # each row a distribution
    rc, _, err = cli("attention", run, "a dog", "--out", png, "--layer", "3")
    assert rc == 2 and "decoder has 1 layers" in err


# ---------------------------------------------------------------------------------------------------
# other data: TSV with a held-out validation split, separate vocabularies, bad input


def test_tsv_separate_vocabularies_empty_lines_and_truncation(cli, tmp_path):
    lines = [f"{s}\t{t}" for s, t in PAIRS[:30]]
    lines[3] = "\t"  # two pairs with an empty side
    lines[7] = "a dog\t"
    write_lines(tmp_path / "pairs.tsv", lines)
    out = tmp_path / "run"
    rc, stdout, err = cli(
        "train", "tatoeba-zh-en", "data.corpus=files", f"data.train_tsv={tmp_path / 'pairs.tsv'}",
        "data.src_lang=en", "data.tgt_lang=de", "tokenizer.vocab_size=280", *TINY_MODEL, "data.max_len=12",
        *TINY_TRAIN, "train.max_steps=2", "--out", out,
    )
    assert rc == 0, err
    assert "skipped 2 pairs with an empty side" in err
    assert "truncated" in err and "to 11 tokens" in err  # the char-level source of long sentences
    assert (out / "tokenizer_src.json").exists() and (out / "tokenizer_tgt.json").exists()
    assert not (out / "tokenizer.json").exists()
    p = lmlab.load(out)
    assert p.src_tokenizer is not p.tokenizer
    assert p.config.model.src_vocab_size == p.src_tokenizer.vocab_size + 3
    assert isinstance(p.translate("a cat eats", beam=2), str)
    assert p.evaluate("valid")["sentences"] == 3  # 10% of the 28 non-empty pairs held out
    # a character never seen in training: byte fallback, no error
    assert isinstance(p.translate("a dog runs ☃ 狗", beam=1), str)
    rc, _, err = cli("eval", out, "--split", "test")
    assert rc == 2 and "no test split" in err


def test_mismatched_files_are_an_error(cli, tmp_path):
    src = write_lines(tmp_path / "train.en", [s for s, _ in PAIRS])
    tgt = write_lines(tmp_path / "train.de", [t for _, t in PAIRS][:37])
    rc, out, err = cli(
        "train", "multi30k-en-de", "data.corpus=files", f"data.train_src={src}",
        f"data.train_tgt={tgt}", *TINY_MODEL, *TINY_TRAIN, "train.max_steps=1", "--out", tmp_path / "run",
    )
    assert rc == 2 and out == ""
    assert err.startswith("lmlab: error:") and "\n" == err[-1] and err.count("\n") == 1
    assert str(src) in err and str(tgt) in err and "40 lines" in err and "has 37" in err


def test_missing_corpus_names_the_path(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_DATA", str(tmp_path / "nowhere"))
    rc, _, err = cli("train", "multi30k-en-de", "--out", tmp_path / "run")
    assert rc == 2 and str(tmp_path / "nowhere" / "multi30k" / "raw") in err
    assert "data.root=" in err and "LMLAB_DATA" in err
    rc, _, err = cli("train", "tatoeba-zh-en", "--out", tmp_path / "run2")
    assert rc == 2 and str(tmp_path / "nowhere" / "tatoeba_cmn_eng" / "cmn.txt") in err


def test_language_model_runs_keep_their_commands(cli, tmp_path):
    text = write_lines(tmp_path / "text.txt", [s for s, _ in PAIRS] * 5)
    out = tmp_path / "lm"
    rc, _, err = cli("train", "shakespeare-char", f"data.path={text}", "model.n_layer=1",
                           "model.n_embd=16", "model.n_head=2", "model.block_size=16", "train.batch_size=4",
                           "train.max_steps=2", "train.progress=false", "--out", out)
    assert rc == 0, err
    rc, out_json, err = cli("eval", out, "--json", "--average", "1")
    assert rc == 0 and "perplexity" in json.loads(out_json)
    rc, _, err = cli("translate", out, "a dog")
    assert rc == 2 and "not a translation run" in err and "lmlab generate" in err
    rc, _, err = cli("eval", out, "--split", "test")
    assert rc == 2 and "--split is for translation runs" in err


# ---------------------------------------------------------------------------------------------------
# recipes and config


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_build(name):
    cfg = load_config(name)
    assert cfg.task == "translation" and cfg.family == "transformer" and cfg.description
    t = cfg.train
    assert (t.optimizer, t.schedule, t.beta1, t.beta2, t.eps) == ("adam", "noam", 0.9, 0.98, 1e-9)
    assert t.label_smoothing == 0.1 and t.keep_checkpoints >= 5 and t.checkpoint_interval > 0
    assert t.max_steps >= 5 * t.checkpoint_interval and t.warmup_steps < t.max_steps
    assert cfg.data.corpus in ("multi30k", "tatoeba-cmn") and cfg.data.src_lang != cfg.data.tgt_lang
    assert cfg.tokenizer.joint == cfg.model.share_embeddings
    model = build_model(cfg.family, dataclasses.replace(cfg.model, src_vocab_size=8003, tgt_vocab_size=8003))
    assert 3_000_000 < sum(p.numel() for p in model.parameters()) < 20_000_000  # small: CPU-sized
    assert name in lmlab.config.list_recipes()


def test_translation_config_errors():
    base = load_raw("multi30k-en-de")
    with pytest.raises(ConfigError) as e:
        build_config(base, ["data.corpuss=files"])
    msg = str(e.value)
    assert "did you mean 'corpus'" in msg and "train_src" in msg and "max_len" in msg
    bad = [
        (["data.corpus=wmt"], "multi30k, tatoeba-cmn, files"),
        (["data.src_lang=fr"], "en, de"),
        (["data.tgt_lang=en"], "both 'en'"),
        (["data.corpus=files"], "data.train_src"),
        (["data.corpus=files", "data.train_src=a.en"], "data.train_tgt is missing"),
        (["data.corpus=files", "data.train_tsv=a.tsv", "data.train_src=a.en", "data.train_tgt=a.de"],
         "not both"),
        (["data.train_src=a.en", "data.train_tgt=a.de"], "for data.corpus=files"),
        (["tokenizer.joint=false"], "share_embeddings"),
        (["tokenizer.src_kind=char"], "tokenizer.joint=false"),
        (["data.max_len=500"], "model.max_len"),
        (["data.path=x.txt"], "language modelling"),
    ]
    for overrides, words in bad:
        with pytest.raises(ConfigError, match=words):
            build_config(base, overrides)
    with pytest.raises(ConfigError, match="encoder-decoder"):
        build_config(dict(base, family="gpt", model={}))
    with pytest.raises(ConfigError, match="translation setting"):
        load_config("shakespeare-char", ["data.corpus=multi30k"])
    assert build_config(base, ["data.src_lang=de", "data.tgt_lang=en"]).data.src_lang == "de"


# ---------------------------------------------------------------------------------------------------
# the real corpus (skipped when the shared data is absent, unless CI is set)


def test_multi30k_three_steps(cli, tmp_path):
    if not (default_data_root() / "multi30k" / "raw" / "train.en.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI: the shared Multi30k data is missing under {default_data_root()}")
        pytest.skip(f"no Multi30k under {default_data_root()}")
    out = tmp_path / "run"
    rc, stdout, err = cli(
        "train", "multi30k-en-de", "tokenizer.vocab_size=400", *TINY_MODEL, "model.max_len=64",
        "data.max_len=64", *TINY_TRAIN, "train.batch_size=512", "train.max_steps=3",
        "train.checkpoint_interval=1", "train.bleu_sentences=0", "--out", out,
    )
    assert rc == 0, err
    assert "done: step 3" in stdout
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    p = lmlab.load(out, average=3)
    assert isinstance(p.translate("A man in a blue shirt is standing on a ladder.", beam=2, max_len=10), str)
