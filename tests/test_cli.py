"""The `lmlab` command end to end: recipes, train (overrides, resume), generate, eval, attention, and
clear `lmlab: error: ...` lines (exit 2) for user mistakes. Most tests call ``lmlab.cli.main`` in
process; a few run the real console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab
from lmlab.cli import main
from lmlab.train import read_metrics

ASSET = Path(lmlab.__file__).parent / "assets" / "tinyshakespeare.txt"
LMLAB = Path(sys.executable).parent / "lmlab"
TINY = [
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.block_size=32",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.log_interval=1",
    "train.progress=false",
]


def write_text(path: Path, chars: int = 20_000, start: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ASSET.read_text(encoding="utf-8")[start : start + chars], encoding="utf-8")
    return path



def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def ascii_stop(text: str, start: int) -> str:
    """A 2-character stop string of ``text`` at or after ``start`` made of printable ASCII (not a
    U+FFFD from a byte token, which can change while a multi-byte character is being generated)."""
    for i in range(start, len(text) - 1):
        if all(c.isascii() and c.isprintable() for c in text[i : i + 2]):
            return text[i : i + 2]
    pytest.skip("the sample holds no ASCII pair to stop at")


def ckpt(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}"


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return write_text(tmp_path_factory.mktemp("data") / "small.txt")


@pytest.fixture(scope="module")
def train_args(text) -> list[str]:
    """The arguments after `lmlab train`: 20 steps, checkpoints at 10 and 20."""
    return ["shakespeare-char", *TINY, f"data.path={text}", "train.max_steps=20",
            "train.checkpoint_interval=10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_args) -> Path:
    """A reference run trained straight to step 20 through the CLI (overrides after --out too)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *train_args[:3], "--out", str(out), *train_args[3:]]) == 0
    return out


# ---------------------------------------------------------------------------------------------------
# recipes and train


def test_recipes_one_line_each(cli):
    rc, out, err = cli("recipes")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(lmlab.config.list_recipes())
    names = [line.split()[0] for line in lines]
    assert names == sorted(names)
    assert {"shakespeare-char", "shakespeare-char-classic", "text-bpe", "multi30k-en-de", "multi30k-de-en",
            "tatoeba-zh-en"} <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # name and description


def test_train_writes_the_run_directory(run):
    for name in ("config.yaml", "tokenizer.json", "metrics.jsonl", "loss.png", "data/tokens.bin"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000010", "step_00000020"]
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 21))
    assert "val_loss" in records[-1]
    cfg = lmlab.load(run).config
    assert cfg.train.max_steps == 20 and cfg.model.n_embd == 32 and cfg.data.path is not None


def test_overrides_before_or_after_out_are_the_same(cli, tmp_path, text):
    args = [*TINY, f"data.path={text}", "train.max_steps=3"]
    rc, out, _ = cli("train", "shakespeare-char", *args, "--out", tmp_path / "a")
    assert rc == 0 and "done: step 3" in out
    rc, _, _ = cli("train", "shakespeare-char", *args[:4], "--out", tmp_path / "b", *args[4:])
    assert rc == 0
    rc, _, _ = cli("train", "shakespeare-char", "--out", tmp_path / "c", *args)
    assert rc == 0
    assert losses(tmp_path / "a") == losses(tmp_path / "b") == losses(tmp_path / "c")
    assert len(losses(tmp_path / "a")) == 3


@pytest.mark.parametrize("damage", ["delete", "tmp", "truncate"])
def test_resume_is_exact(cli, run, tmp_path, train_args, damage):
    """Stop the reference run after step 10 in three honest ways and run the same command again: the
    resumed run must log exactly the losses of the run trained straight through."""
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    last = ckpt(copy, 20)
    if damage == "delete":  # as if the run had stopped at step 10
        shutil.rmtree(last)
    elif damage == "tmp":  # killed while writing the step-20 checkpoint: a half-written step_N.tmp
        (last / "model.safetensors").write_bytes((last / "model.safetensors").read_bytes()[:1000])
        last.rename(last.with_name(last.name + ".tmp"))
    else:  # a truncated final checkpoint
        data = (last / "trainer_state.pt").read_bytes()
        (last / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    rc, out, err = cli("train", *train_args, "--out", copy)
    assert rc == 0, err
    assert "resuming from" in err and "step_00000010" in err
    if damage == "truncate":
        assert "lmlab: warning: checkpoint" in err and "corrupt" in err
    assert losses(copy) == losses(run)  # every step, bit for bit
    assert [r["step"] for r in read_metrics(copy)] == list(range(1, 21))
    assert read_metrics(copy)[-1]["val_loss"] == read_metrics(run)[-1]["val_loss"]
    assert not list((copy / "checkpoints").glob("*.tmp"))
    assert lmlab.load(copy).checkpoint == ckpt(copy, 20)


def test_extending_a_run_equals_training_straight(cli, tmp_path, text):
    """10 steps, then the same command with train.max_steps=20 (constant learning rate, so the
    schedule does not depend on max_steps) == 20 steps straight."""
    args = ["shakespeare-char", *TINY, f"data.path={text}", "train.schedule=constant"]
    assert cli("train", *args, "train.max_steps=20", "--out", tmp_path / "straight")[0] == 0
    assert cli("train", *args, "train.max_steps=10", "--out", tmp_path / "twice")[0] == 0
    rc, out, err = cli("train", *args, "train.max_steps=20", "--out", tmp_path / "twice")
    assert rc == 0 and "resuming from" in err and "done: step 20" in out
    assert losses(tmp_path / "twice") == losses(tmp_path / "straight")
    # Nothing left to do: a clear message, not an error.
    rc, out, err = cli("train", *args, "train.max_steps=20", "--out", tmp_path / "twice")
    assert rc == 0 and "nothing to train" in err


def test_resume_with_a_changed_model_setting(cli, run, train_args):
    before = (run / "config.yaml").read_text()
    rc, out, err = cli("train", *train_args, "model.n_layer=2", "--out", run)
    assert rc == 2 and out == ""
    assert err.startswith("lmlab: error: ") and "model.n_layer=1" in err and "model.n_layer=2" in err
    assert (run / "config.yaml").read_text() == before  # the run is untouched
    rc, _, err = cli("train", *train_args, "tokenizer.kind=bpe", "--out", run)
    assert rc == 2 and "tokenizer.kind" in err


def test_restart_without_checkpoint_retrains_a_changed_tokenizer(cli, tmp_path, text):
    """A run that never checkpointed starts over; a changed tokenizer setting is not silently ignored."""
    args = ["shakespeare-char", *TINY, f"data.path={text}", "train.max_steps=0"]
    assert cli("train", *args, "--out", tmp_path / "r")[0] == 0
    char_vocab = json.loads((tmp_path / "r" / "tokenizer.json").read_text())
    assert char_vocab["type"] == "lmlab-char"
    rc, _, err = cli("train", *args, "tokenizer.kind=bpe", "tokenizer.vocab_size=300",
                           "--out", tmp_path / "r")
    assert rc == 0, err
    assert json.loads((tmp_path / "r" / "tokenizer.json").read_text()).get("type") != "lmlab-char"


def test_relative_data_path_resumes_from_another_directory(cli, tmp_path, monkeypatch):
    write_text(tmp_path / "work" / "corpus.txt", 5000)
    args = ["shakespeare-char", *TINY, "data.path=corpus.txt", "--out", tmp_path / "run"]
    monkeypatch.chdir(tmp_path / "work")
    assert cli("train", *args, "train.max_steps=2")[0] == 0
    saved = lmlab.load(tmp_path / "run").config.data.path
    assert saved == str(tmp_path / "work" / "corpus.txt")  # saved absolute
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli("train", *args, "train.max_steps=3")
    assert rc == 2 and "corpus.txt" in err  # a different file: refused, not silently mixed
    rc, _, err = cli("train", *args[:-3], "data.path=work/corpus.txt", *args[-2:],
                           "train.max_steps=3")
    assert rc == 0 and "resuming from" in err, err


def test_text_bpe_recipe_on_a_folder(cli, tmp_path):
    corpus = tmp_path / "corpus"
    write_text(corpus / "a.txt", 6000)
    write_text(corpus / "more" / "b.txt", 6000, start=50_000)
    (corpus / "notes.md").write_text("not a .txt file: ignored")
    out_dir = tmp_path / "bpe"
    rc, out, err = cli(
        "train", "text-bpe", f"data.path={corpus}", "tokenizer.vocab_size=300", *TINY,
        "train.max_steps=5", "train.eval_interval=0", "--out", out_dir,
    )
    assert rc == 0, err
    p = lmlab.load(out_dir)
    assert p.tokenizer.vocab_size == 300 and p.tokenizer.eos_id is not None
    assert p.config.tokenizer.kind == "bpe" and p.config.model.vocab_size == 300
    assert isinstance(p.generate("The king", max_new_tokens=10, seed=0), str)
    rc, out, err = cli("eval", out_dir, "--json")
    assert rc == 0 and json.loads(out)["loss"] > 0


# ---------------------------------------------------------------------------------------------------
# generate, eval, attention


def test_generate_prints_prompt_and_continuation(cli, run):
    rc, out, err = cli("generate", run, "--prompt", "ROMEO:", "--max-new-tokens", "25",
                             "--temperature", "0")
    assert rc == 0 and err == ""
    expected = lmlab.load(run).generate("ROMEO:", max_new_tokens=25, temperature=0)
    assert out == "ROMEO:" + expected + "\n"
    rc2, out2, _ = cli("generate", run, "--prompt", "ROMEO:", "--max-new-tokens", "25",
                             "--temperature", "0")
    assert out2 == out


def test_generate_sampling_options_and_seed(cli, run):
    args = ["generate", run, "--prompt", "To be", "--max-new-tokens", "30", "--temperature", "0.9",
            "--top-k", "20", "--top-p", "0.95"]
    rc, a, _ = cli(*args, "--seed", "7")
    rc2, b, _ = cli(*args, "--seed", "7")
    rc3, c, _ = cli(*args, "--seed", "8")
    assert rc == rc2 == rc3 == 0 and a == b and a != c and a.startswith("To be")
    p = lmlab.load(run)
    assert a == "To be" + p.generate("To be", max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.95,
                                     seed=7) + "\n"


def test_generate_stop_string(cli, run):
    full = lmlab.load(run).generate("First", max_new_tokens=40, seed=3)
    stop = ascii_stop(full, 8)
    rc, out, _ = cli("generate", run, "--prompt", "First", "--max-new-tokens", "40",
                           "--seed", "3", f"--stop={stop}")
    assert rc == 0 and out == "First" + full[: full.find(stop)] + "\n"


def test_generate_with_a_prompt_longer_than_the_context(cli, run):
    prompt = ASSET.read_text(encoding="utf-8")[:100]
    rc, out, err = cli("generate", run, "--prompt", prompt, "--max-new-tokens", "10",
                             "--temperature", "0")
    assert rc == 0 and out.startswith(prompt) and len(out) == len(prompt) + 10 + 1
    assert "lmlab: warning:" in err and "context is 32" in err and "Traceback" not in err


def test_eval_json_matches_the_python_api(cli, run, tmp_path):
    rc, out, err = cli("eval", run, "--json")
    assert rc == 0
    result = json.loads(out)  # exactly one JSON object
    assert out.count("\n") == 1 and {"loss", "perplexity"} <= set(result)
    assert result == pytest.approx(lmlab.load(run).evaluate())
    held_out = write_text(tmp_path / "held_out.txt", 3000, start=200_000)
    rc, out, _ = cli("eval", run, "--data", held_out, "--json")
    on_file = json.loads(out)
    assert rc == 0 and on_file == pytest.approx(lmlab.load(run).evaluate(str(held_out)))
    assert on_file["tokens"] == len(lmlab.load(run).tokenizer.encode(held_out.read_text())) - 1
    rc, out, _ = cli("eval", run)
    assert rc == 0 and out.startswith("loss: ") and "perplexity: " in out


def test_attention_map(cli, run, tmp_path):
    out_png = tmp_path / "map.png"
    rc, out, err = cli("attention", run, "To be, or not", "--out", out_png, "--layer", "0",
                             "--head", "1")
    assert rc == 0 and str(out_png) in out
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    rc, out, err = cli("attention", run, "To be", "--out", out_png, "--head", "5")
    assert rc == 2 and "lmlab: error: --head 5 out of range" in err


def test_checkpoint_directory_and_fallback_through_the_cli(cli, run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    model_file = ckpt(copy, 20) / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:-100])
    rc, out, err = cli("generate", ckpt(copy, 20), "--prompt", "A", "--max-new-tokens", "3")
    assert rc == 2 and out == "" and "model.safetensors" in err and "truncated or corrupt" in err
    rc, out, err = cli("generate", copy, "--prompt", "A", "--max-new-tokens", "3",
                             "--temperature", "0")
    assert rc == 0 and "lmlab: warning: checkpoint" in err and "using" in err and "step_00000010" in err
    p10 = lmlab.load(ckpt(run, 10))
    assert out == "A" + p10.generate("A", max_new_tokens=3, temperature=0) + "\n"


# ---------------------------------------------------------------------------------------------------
# user mistakes: one clear line, exit status 2, no traceback


def assert_clean_error(rc: int, out: str, err: str, *words: str) -> None:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    assert err.startswith("lmlab: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize(
    "args, words",
    [
        (["no-such-recipe"], ["unknown recipe 'no-such-recipe'", "shakespeare-char", "text-bpe"]),
        (["shakespeare-char", "model.n_layers=2"], ["model.n_layers", "n_layer", "n_embd"]),
        (["shakespeare-char", "trainer.max_steps=2"], ["'trainer'", "train", "model"]),
        (["shakespeare-char", "train.max_steps=abc"], ["train.max_steps", "'abc'", "int"]),
        (["shakespeare-char", "train.lr=-1"], ["train.lr"]),
        (["shakespeare-char", "train.max_steps"], ["'train.max_steps'", "key=value"]),
        (["shakespeare-char", "data.path=/no/such/file.txt"], ["/no/such/file.txt", "not found"]),
        (["shakespeare-char", "train.device=tpu"], ["tpu"]),
        (["missing.yaml"], ["missing.yaml", "not found"]),
    ],
)
def test_train_errors(cli, tmp_path, args, words):
    rc, out, err = cli("train", *args, "--out", tmp_path / "run")
    assert_clean_error(rc, out, err, *words)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_data_errors(cli, tmp_path, text):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    rc, out, err = cli("train", "shakespeare-char", *TINY, f"data.path={empty}", "--out",
                             tmp_path / "r1")
    assert_clean_error(rc, out, err, str(empty), "empty")
    (tmp_path / "nothing").mkdir()
    rc, out, err = cli("train", "shakespeare-char", *TINY, f"data.path={tmp_path / 'nothing'}",
                             "--out", tmp_path / "r2")
    assert_clean_error(rc, out, err, "no .txt files")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\n")
    rc, out, err = cli("train", "shakespeare-char", *TINY, f"data.path={tiny}", "--out",
                             tmp_path / "r3")
    assert_clean_error(rc, out, err, "block_size")
    rc, out, err = cli("train", "shakespeare-char", *TINY, "model.dropout=1.5",
                             f"data.path={text}", "--out", tmp_path / "r4")
    assert_clean_error(rc, out, err, "dropout")


@pytest.mark.parametrize(
    "options, words",
    [
        (["--temperature", "-1"], ["temperature"]),
        (["--top-p", "2"], ["top_p"]),
        (["--top-p", "0"], ["top_p"]),
        (["--top-k", "-3"], ["top_k"]),
        (["--max-new-tokens", "-1"], ["max_new_tokens"]),
        (["--prompt", ""], ["empty prompt"]),
        (["--stop", ""], ["stop"]),
    ],
)
def test_generate_option_errors(cli, run, options, words):
    rc, out, err = cli("generate", run, "--prompt", "hi", *options)
    assert_clean_error(rc, out, err, *words)
    assert out == ""  # nothing printed before the error, not even the prompt


def test_run_directory_errors(cli, tmp_path, run):
    rc, out, err = cli("generate", tmp_path / "missing", "--prompt", "x")
    assert_clean_error(rc, out, err, "missing")
    (tmp_path / "empty").mkdir()
    rc, out, err = cli("eval", tmp_path / "empty", "--json")
    assert_clean_error(rc, out, err, "not an lmlab run")
    no_ckpt = Path(shutil.copytree(run, tmp_path / "no_ckpt", ignore=shutil.ignore_patterns("checkpoints")))
    rc, out, err = cli("generate", no_ckpt, "--prompt", "x")
    assert_clean_error(rc, out, err, "no checkpoint")
    rc, out, err = cli("eval", run, "--data", tmp_path / "nope.txt")
    assert_clean_error(rc, out, err, "nope.txt")
    rc, out, err = cli("attention", run, "abc", "--out", tmp_path / "map.nope")
    assert_clean_error(rc, out, err, "map.nope")
    if not __import__("torch").cuda.is_available():
        rc, out, err = cli("generate", run, "--device", "cuda", "--prompt", "x")
        assert_clean_error(rc, out, err, "CUDA")


def test_usage_errors_exit_2(cli, run):
    rc, out, err = cli("generate", run, "--top-k", "abc")
    assert rc == 2 and "invalid int value" in err
    rc, out, err = cli("generate", run, "--bogus", "1")
    assert rc == 2 and "unrecognized arguments" in err
    rc, out, err = cli("train", "shakespeare-char", "--out", "x", "--bogus")
    assert rc == 2 and "unrecognized arguments" in err
    rc, out, err = cli()
    assert rc == 2


# ---------------------------------------------------------------------------------------------------
# the real console script (a few: each process pays the PyTorch import)


def run_lmlab(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([str(LMLAB), *map(str, argv)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


@pytest.mark.skipif(not LMLAB.exists(), reason="the lmlab console script is not installed")
def test_console_script_generate_and_eval(run):
    p = run_lmlab("generate", run, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ROMEO:" + lmlab.load(run).generate("ROMEO:", max_new_tokens=20, seed=1) + "\n"
    p = run_lmlab("eval", run, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == pytest.approx(lmlab.load(run).evaluate())


@pytest.mark.skipif(not LMLAB.exists(), reason="the lmlab console script is not installed")
def test_console_script_error(tmp_path):
    p = run_lmlab("train", "shakespeare-char", "train.max_steps=abc", "--out", tmp_path / "x")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == "lmlab: error: config key 'train.max_steps': cannot use 'abc' as int"
