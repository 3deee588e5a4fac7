"""BERT: a bidirectional Transformer encoder pre-trained as a masked language model (Devlin et al., 2019).

    h_0    = LayerNorm(W_e[tokens] + W_p[positions] + W_s[segments])
    h_l    = Block(h_{l-1})  for l = 1..n_layer     (post-LN, bidirectional self-attention + FFN)
    pooled = tanh(W_pool h_L[CLS] + b_pool)         (the sentence vector read by NSP and classification)

The heads, each a small module on top of ``Bert``:

    BertForMaskedLM                 logits = LayerNorm(act(W_t h_L + b_t)) W_eᵀ + b   (decoder tied to W_e)
    BertForPreTraining              (masked-LM logits, next-sentence logits W_nsp pooled + b_nsp)
                                    (the family's model when model.next_sentence: MLM + NSP pretraining)
    BertForSequenceClassification   W_c Dropout(pooled) + b_c      (one sentence or a pair)
    BertForTokenClassification      W_c Dropout(h_L) + b_c         (one label per token)

``attention_mask`` follows Hugging Face: 1 at real tokens, 0 at padding. ``token_type_ids`` are the
segments (0 for sentence A, 1 for sentence B); they default to zeros. BERT-base is n_layer=12,
n_head=12, d_model=768, d_ff=3072 (110M); all-MiniLM-L6-v2 is 6, 12, 384, 1536 (22M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.nn import LayerNorm, LearnedPositionalEmbedding, TransformerBlock

ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


@dataclass
class BertConfig:
    vocab_size: int = 0
    """Vocabulary size; 0 means: take it from the tokenizer."""
    block_size: int = 512
    """Context length: the number of learned positions (HF: max_position_embeddings)."""
    type_vocab_size: int = 2
    """Number of segments (token types): 2, sentence A and sentence B."""
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    """Hidden size (HF: hidden_size)."""
    d_ff: int = 0
    """Feed-forward width; 0 means 4 · d_model."""
    dropout: float = 0.1
    """On the embeddings and every sub-layer's output (HF: hidden_dropout_prob)."""
    attn_dropout: float = 0.1
    """On the attention weights (HF: attention_probs_dropout_prob)."""
    activation: str = "gelu"
    """gelu (exact erf GELU, BERT's), gelu_tanh or relu."""
    norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    """The [PAD] id: its embedding starts at zero and gets no gradient (None: no padding row)."""
    num_labels: int = 2
    """Classes of BertForSequenceClassification / BertForTokenClassification."""
    classifier_dropout: float | None = None
    """Dropout before the classifiers; None means ``dropout``."""
    attention: str = "fused"
    """fused (F.scaled_dot_product_attention) or eager (written out; can return weights)."""
    next_sentence: bool = False
    """The 'bert' family's model also has the next-sentence head and the pooler (a BertForPreTraining
    instead of a BertForMaskedLM): masked-LM pretraining (task mlm) then also trains next-sentence
    prediction on sentence pairs, half of them with a random second segment."""

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def max_position_embeddings(self) -> int:
        return self.block_size

    def validate(self) -> None:
        if self.d_model % self.n_head:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})"
            )
        for key, value, valid in [
            ("activation", self.activation, tuple(ACTIVATIONS)),
            ("attention", self.attention, ("fused", "eager")),
        ]:
            if value not in valid:
                raise ConfigError(f"model.{key} = '{value}' is not one of: {', '.join(valid)}")
        if min(self.block_size, self.n_layer, self.n_head, self.d_model, self.type_vocab_size) <= 0:
            raise ConfigError("model.block_size, type_vocab_size, n_layer, n_head, d_model must be positive")
        if self.num_labels < 1:
            raise ConfigError(f"model.num_labels must be >= 1 (got {self.num_labels})")


def init_bert_weights(model: nn.Module, pad_token_id: int | None) -> None:
    """BERT initialisation: N(0, 0.02) weights and embeddings, zero biases, LayerNorm γ = 1, and a
    zero [PAD] embedding."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif "norm" in name:
            nn.init.ones_(p)
        else:
            nn.init.normal_(p, mean=0.0, std=0.02)
    for m in model.modules():
        if isinstance(m, Bert) and pad_token_id is not None:
            with torch.no_grad():
                m.tok_emb.weight[pad_token_id].zero_()


class Bert(nn.Module):
    """The encoder: ids (B, T) -> last hidden states (B, T, d_model); ``pool`` gives the [CLS] vector."""

    def __init__(self, config: BertConfig, pooler: bool = True) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
        if config.pad_token_id is not None and not 0 <= config.pad_token_id < config.vocab_size:
            raise ConfigError(f"model.pad_token_id={config.pad_token_id} is outside the vocabulary")
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)
        self.pos_emb = LearnedPositionalEmbedding(c.block_size, c.d_model)
        self.type_emb = nn.Embedding(c.type_vocab_size, c.d_model)
        self.emb_norm = LayerNorm(c.d_model, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.d_model,
                c.n_head,
                c.d_ff or 4 * c.d_model,
                dropout=c.dropout,
                attn_dropout=c.attn_dropout,
                activation=c.activation,
                norm="layernorm",
                norm_eps=c.norm_eps,
                pre_norm=False,
                causal=False,
                fused=c.attention == "fused",
            )
            for _ in range(c.n_layer)
        )
        self.pooler = nn.Linear(c.d_model, c.d_model) if pooler else None
        init_bert_weights(self, c.pad_token_id)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """input_ids: (B, T) -> last hidden states (B, T, d_model).

        attention_mask: (B, T), 1 at real tokens and 0 at padding (padding is never attended to).
        With ``need_weights``, also returns each layer's attention weights (B, H, T, T) (eager path).
        """
        t = input_ids.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} positions exceeds the context length {self.config.block_size}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.tok_emb(input_ids) + self.type_emb(token_type_ids) + self.pos_emb(t)
        x = self.drop(self.emb_norm(x))
        padding_mask = None if attention_mask is None else attention_mask == 0  # True at padding
        attentions = []
        for block in self.blocks:
            x, w = block(x, padding_mask=padding_mask, need_weights=need_weights)
            if need_weights:
                attentions.append(w["self"])
        return (x, attentions) if need_weights else x

    def pool(self, hidden: Tensor) -> Tensor:
        """(B, T, d_model) hidden states -> (B, d_model) pooled output: tanh(W h[CLS] + b)."""
        if self.pooler is None:
            raise ValueError("this Bert has no pooler (built with pooler=False)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def embed(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        normalize: bool = True,
    ) -> Tensor:
        """Sentence embeddings (B, d_model): the last hidden states averaged over the real tokens
        (sentence-transformers' mean pooling), L2-normalised unless ``normalize=False``."""
        h = self(input_ids, attention_mask, token_type_ids)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        mask = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


class BertMLMHead(nn.Module):
    """Masked-LM head: LayerNorm(act(W_t h + b_t)) W_eᵀ + b, the decoder weight shared with the embedding."""

    def __init__(self, config: BertConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.act = ACTIVATIONS[config.activation]
        self.transform = nn.Linear(config.d_model, config.d_model)
        self.norm = LayerNorm(config.d_model, eps=config.norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)
        self.decoder.weight = embedding.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.transform(hidden))))


class BertForMaskedLM(nn.Module):
    """ids (B, T) -> masked-LM logits (B, T, vocab_size). The encoder has no pooler (as in HF).

    ``mlm_positions`` (B, T) bool: the logits of those positions only, (N, vocab_size) in row-major
    order (a masked-LM loss needs no others; the vocabulary projection is most of the head's cost).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=False)
        self.mlm = BertMLMHead(config, self.bert.tok_emb)
        init_bert_weights(self, config.pad_token_id)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
    ) -> Tensor:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm(h if mlm_positions is None else h[mlm_positions])


class BertForPreTraining(nn.Module):
    """ids (B, T) -> (masked-LM logits (B, T, V), next-sentence logits (B, 2): 0 = B follows A).

    ``mlm_positions`` as for BertForMaskedLM: masked-LM logits (N, V) of those positions only.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=True)
        self.mlm = BertMLMHead(config, self.bert.tok_emb)
        self.nsp = nn.Linear(config.d_model, 2)
        init_bert_weights(self, config.pad_token_id)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        return self.mlm(h if mlm_positions is None else h[mlm_positions]), self.nsp(self.bert.pool(h))


def bert_masked_lm(config: BertConfig) -> BertForMaskedLM | BertForPreTraining:
    """The 'bert' family's model (masked-LM runs, converted runs, fill-mask): a BertForMaskedLM, or a
    BertForPreTraining (with the next-sentence head) when ``config.next_sentence``."""
    return BertForPreTraining(config) if config.next_sentence else BertForMaskedLM(config)


class BertForSequenceClassification(nn.Module):
    """ids (B, T) of one sentence or a pair (with token_type_ids) -> logits (B, num_labels)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=True)
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.drop = nn.Dropout(p)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self, config.pad_token_id)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        pooled = self.bert.pool(self.bert(input_ids, attention_mask, token_type_ids))
        return self.classifier(self.drop(pooled))


class BertForTokenClassification(nn.Module):
    """ids (B, T) -> logits (B, T, num_labels). The encoder has no pooler (as in HF)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = Bert(config, pooler=False)
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.drop = nn.Dropout(p)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self, config.pad_token_id)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        return self.classifier(self.drop(self.bert(input_ids, attention_mask, token_type_ids)))
