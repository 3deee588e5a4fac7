import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.data import BUNDLED_SHAKESPEARE, TokenData, random_blocks
from lmlab.errors import ConfigError, DataError
from lmlab.tasks import LMTask, evaluate_lm
from lmlab.tokenizers import CharTokenizer

TEXT = BUNDLED_SHAKESPEARE.read_text(encoding="utf-8")[:5000]


class Bigram(nn.Module):
    """Logits depend on the current token only."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, vocab)
        self.seen_training: list[bool] = []

    def forward(self, idx):
        self.seen_training.append(self.training)
        return self.out(self.emb(idx))


class Prefix(Bigram):
    """Logits depend on the whole prefix (running mean of embeddings)."""

    def forward(self, idx):
        h = self.emb(idx).cumsum(1) / torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        return self.out(h)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "t.txt").write_text(TEXT, encoding="utf-8")
    return TokenData.build(root / "t.txt", CharTokenizer.train([TEXT]), root / "cache")


def test_batch_is_deterministic(data):
    task = LMTask(data, block_size=16, seed=3, device="cpu")
    x, y = task.batch(step=5, micro=0, n_micro=1, rank=0, world=1, batch_size=8)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, y2 = LMTask(data, 16, seed=3).batch(5, 0, 1, 0, 1, 8)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, task.batch(6, 0, 1, 0, 1, 8)[0])
    assert not torch.equal(x, LMTask(data, 16, seed=4).batch(5, 0, 1, 0, 1, 8)[0])


@pytest.mark.parametrize("n_micro,world", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_micro_rank_slices_form_the_global_batch(data, n_micro, world):
    task = LMTask(data, block_size=16, seed=11)
    step, batch_size = 7, 8
    g = torch.Generator().manual_seed(11 * 1_000_003 + step)
    gx, gy = random_blocks(data.train, batch_size, 16, g)
    parts = {}
    for micro in range(n_micro):
        for rank in range(world):
            parts[micro * world + rank] = task.batch(step, micro, n_micro, rank, world, batch_size)
    x = torch.cat([parts[i][0] for i in range(n_micro * world)])
    y = torch.cat([parts[i][1] for i in range(n_micro * world)])
    assert torch.equal(x, gx) and torch.equal(y, gy)


def test_batch_size_must_divide(data):
    task = LMTask(data, block_size=16, seed=0)
    with pytest.raises(ConfigError, match=r"batch_size=6 .* 2 x 2 = 4"):
        task.batch(0, 0, 2, 0, 2, 6)


def test_block_size_too_large(data):
    with pytest.raises(DataError, match="validation split has 500 tokens"):
        LMTask(data, block_size=500, seed=0)


def test_loss(data):
    torch.manual_seed(0)
    model = Bigram(data.vocab_size)
    task = LMTask(data, block_size=16, seed=0)
    batch = task.batch(0, 0, 1, 0, 1, 4)
    loss, n = task.loss(model, batch)
    x, y = batch
    expected = F.cross_entropy(model(x).reshape(-1, data.vocab_size), y.reshape(-1))
    assert n == 64 and loss.dtype == torch.float32
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.emb.weight.grad is not None


def test_evaluate_is_exact_mean_over_all_val_tokens(data):
    torch.manual_seed(0)
    model = Bigram(data.vocab_size)
    val = torch.from_numpy(data.val.astype(np.int64))
    with torch.no_grad():  # a bigram model: the loss of each token depends only on the previous one
        per_token = F.cross_entropy(model(val[None, :-1])[0], val[1:], reduction="none")
    expected = per_token.double().mean().item()

    task = LMTask(data, block_size=24, seed=0, eval_batch_size=3)  # 499 predictions: 20 full + partial
    model.train()
    model.seen_training.clear()
    out = task.evaluate(model)
    assert out["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert out["val_ppl"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert model.training and model.seen_training and not any(model.seen_training)
    model.eval()
    task.evaluate(model)
    assert not model.training


def test_evaluate_with_prefix_model_and_max_batches(data):
    torch.manual_seed(0)
    model = Prefix(data.vocab_size)
    val = torch.from_numpy(data.val.astype(np.int64))
    T = 24
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(val) - 1, T):  # window by window, the last one partial
            x, y = val[s : s + T], val[s + 1 : s + T + 1]
            x = x[: len(y)]
            total += F.cross_entropy(model(x[None])[0], y, reduction="sum").item()
            count += len(y)
    out = evaluate_lm(model, data.val, T, batch_size=5)
    assert out["tokens"] == count == len(val) - 1
    assert out["loss"] == pytest.approx(total / count, rel=1e-5)

    first = evaluate_lm(model, data.val, T, batch_size=5, max_batches=1)
    assert first["tokens"] == 5 * T
    with torch.no_grad():
        x, y = val[: 5 * T].view(5, T), val[1 : 5 * T + 1].view(5, T)
        expected = F.cross_entropy(model(x).reshape(-1, data.vocab_size), y.reshape(-1)).item()
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    assert LMTask(data, T, seed=0, eval_batch_size=5).evaluate(model, max_batches=1)["val_loss"] == (
        pytest.approx(expected, rel=1e-5)
    )
