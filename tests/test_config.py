"""Config: recipes, YAML files, dotted key=value overrides, type coercion and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from lmlab.config import (
    DataConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
    build_config,
    list_recipes,
    load_config,
    load_raw,
    parse_overrides,
    save_config,
)
from lmlab.errors import ConfigError, LmlabError


def test_bundled_recipes_are_listed_and_all_build():
    recipes = list_recipes()
    assert {"shakespeare-char", "shakespeare-char-classic", "text-bpe"} <= set(recipes)
    for name, desc in recipes.items():
        assert desc and "\n" not in desc, name
        cfg = load_config(name)
        assert isinstance(cfg, RunConfig)
        if cfg.task in ("mlm", "classification", "tagging"):  # BERT: pretraining and fine-tuning
            assert cfg.family == "bert", name
        else:
            assert cfg.family in (("transformer", "seq2seq") if cfg.task == "translation" else ("gpt", "rnn"))
        assert cfg.description == desc


def test_unknown_recipe_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare_char")
    msg = str(e.value)
    assert "shakespeare_char" in msg and "shakespeare-char" in msg and "text-bpe" in msg
    assert "did you mean 'shakespeare-char'" in msg


def test_config_errors_are_lmlab_errors():
    assert issubclass(ConfigError, LmlabError)


# ---------------------------------------------------------------------------------------------------
# overrides and coercion


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["train.max_steps=200", "model.n_layer=4", "data.path=a=b.txt"]) == {
        "train": {"max_steps": "200"},
        "model": {"n_layer": "4"},
        "data": {"path": "a=b.txt"},  # only the first '=' splits
    }
    assert parse_overrides(["data.path=null", "data.block_size=None", "tokenizer.path=~"]) == {
        "data": {"path": None, "block_size": None},
        "tokenizer": {"path": None},
    }


@pytest.mark.parametrize(
    "override, section, key, expected",
    [
        ("train.max_steps=300", "train", "max_steps", 300),
        ("train.max_steps=1e3", "train", "max_steps", 1000),
        ("train.max_steps=2_000", "train", "max_steps", 2000),
        ("train.lr=1e-3", "train", "lr", 1e-3),
        ("train.lr=3", "train", "lr", 3.0),
        ("train.min_lr=.5e-4", "train", "min_lr", 5e-5),
        ("train.compile=true", "train", "compile", True),
        ("train.compile=True", "train", "compile", True),
        ("train.compile=yes", "train", "compile", True),
        ("train.compile=1", "train", "compile", True),
        ("train.progress=false", "train", "progress", False),
        ("train.progress=off", "train", "progress", False),
        ("train.progress=0", "train", "progress", False),
        ("data.path=null", "data", "path", None),
        ("data.path=corpus/a.txt", "data", "path", "corpus/a.txt"),
        ("data.block_size=none", "data", "block_size", None),
        ("data.block_size=16", "data", "block_size", 16),
        ("tokenizer.kind=bpe", "tokenizer", "kind", "bpe"),
        ("model.n_layer=2", "model", "n_layer", 2),
        ("model.dropout=0.25", "model", "dropout", 0.25),
        ("model.bias=false", "model", "bias", False),
    ],
)
def test_override_coercion(override, section, key, expected):
    cfg = load_config("shakespeare-char", [override])
    value = getattr(getattr(cfg, section), key)
    assert value == expected and type(value) is type(expected)


def test_overrides_win_over_the_recipe_and_keep_the_rest():
    base = load_config("shakespeare-char")
    cfg = load_config("shakespeare-char", ["train.max_steps=7", "model.n_embd=64"])
    assert cfg.train.max_steps == 7 and cfg.model.n_embd == 64
    assert cfg.model.n_layer == base.model.n_layer and cfg.train.lr == base.train.lr


def test_top_level_overrides():
    cfg = load_config("shakespeare-char", ["description=my run", "family=gpt"])
    assert cfg.description == "my run" and cfg.family == "gpt"


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.max_steps=abc", ["train.max_steps", "'abc'", "int"]),
        ("train.max_steps=2.5", ["train.max_steps", "'2.5'", "int"]),
        ("train.max_steps=true", ["train.max_steps", "int"]),
        ("train.lr=fast", ["train.lr", "'fast'", "float"]),
        ("train.compile=maybe", ["train.compile", "'maybe'", "bool"]),
        ("model.n_layer=null", ["model.n_layer", "null"]),
        ("train.max_steps.x=1", ["train.max_steps", "not a section"]),
        ("train=5", ["'train'", "section"]),
    ],
)
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare-char", [override])
    for w in words:
        assert w in str(e.value)


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare-char", ["train.max_step=5"])
    msg = str(e.value)
    assert "'train.max_step'" in msg and "did you mean 'max_steps'" in msg
    for valid in ("max_steps", "batch_size", "lr", "checkpoint_interval"):
        assert valid in msg
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare-char", ["model.layers=2"])
    assert "'model.layers'" in str(e.value) and "n_layer" in str(e.value)


def test_unknown_section_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare-char", ["trainer.max_steps=5"])
    msg = str(e.value)
    assert "'trainer'" in msg
    for valid in ("model", "tokenizer", "data", "train"):
        assert valid in msg


@pytest.mark.parametrize("item", ["train.max_steps", "max_steps 5", "", "train.max_steps:5"])
def test_override_without_equals(item):
    with pytest.raises(ConfigError, match="key=value"):
        load_config("shakespeare-char", [item])


@pytest.mark.parametrize("item", ["=5", "train.=5", ".lr=1"])
def test_override_with_an_empty_key_part(item):
    with pytest.raises(ConfigError, match="dotted key"):
        parse_overrides([item])


def test_override_conflicts():
    with pytest.raises(ConfigError, match="not a section"):
        parse_overrides(["train.max_steps=5", "train.max_steps.x=1"])
    with pytest.raises(ConfigError, match="is a section"):
        parse_overrides(["train.max_steps=5", "train=3"])


# ---------------------------------------------------------------------------------------------------
# value checks (before any work is done)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("train.max_steps=-5", "train.max_steps"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
        ("train.beta1=1", "train.beta1"),
        ("train.beta2=-0.1", "train.beta2"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints"),
        ("train.optimizer=sgd", "train.optimizer"),
        ("train.schedule=linear", "train.schedule"),
        ("train.precision=fp16", "train.precision"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.block_size=0", "data.block_size"),
        ("tokenizer.kind=word", "tokenizer.kind"),
        ("tokenizer.vocab_size=0", "tokenizer.vocab_size"),
        ("model.n_head=3", "model.n_embd"),  # the model's own check (128 % 3)
        ("model.attention=flash", "model.attention"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("shakespeare-char", [override])
    assert key in str(e.value)


def test_batch_size_must_split_into_micro_batches():
    with pytest.raises(ConfigError, match="grad_accum"):
        load_config("shakespeare-char", ["train.batch_size=10", "train.grad_accum=4"])
    cfg = load_config("shakespeare-char", ["train.batch_size=12", "train.grad_accum=4"])
    assert cfg.train.grad_accum == 4


def test_a_misspelt_choice_suggests_the_fix():
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        load_config("shakespeare-char", ["train.schedule=cosin"])


# ---------------------------------------------------------------------------------------------------
# YAML files


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "description: mine\nmodel:\n  n_layer: 2\n  n_embd: 64\n  n_head: 2\n"
        "train:\n  lr: 3.0e-4\n  max_steps: 50\n"
    )
    cfg = load_config(str(path), ["train.max_steps=60"])
    assert cfg.description == "mine" and cfg.model.n_layer == 2 and cfg.train.lr == 3e-4
    assert cfg.train.max_steps == 60
    assert cfg.tokenizer == TokenizerConfig() and cfg.data == DataConfig()  # defaults for the rest


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_raw(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_raw(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_raw(str(listy))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model: 5\n")
    with pytest.raises(ConfigError, match="'model' is a section"):
        load_config(str(wrong))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(str(unknown))


def test_empty_yaml_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    cfg = load_config(str(path))
    assert cfg.train == TrainConfig() and cfg.family == "gpt"


def test_a_folder_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare-char").mkdir()
    assert load_config("shakespeare-char").model.n_layer == 4


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("text-bpe", ["data.path=corpus", "train.max_steps=9", "model.vocab_size=300"])
    save_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    again = build_config(raw)
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
