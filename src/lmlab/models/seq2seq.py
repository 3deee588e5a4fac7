"""The RNN encoder-decoder, with a fixed context vector or with attention over the source.

An encoder RNN reads the source x_1..x_S, a decoder RNN writes the target y_1..y_T (y_0 = BOS);
RNN is a stack of ``n_layers`` LSTM / GRU / Elman layers (``lmlab.nn.Recurrent``), E_src / E_tgt
the embeddings, [a; b] concatenation, s_i the decoder's top-layer state after step i (the whole
stack's state is carried from step to step).

Encoder (``bidirectional``: two directions of d_hidden/2 each, so h_j is d_hidden wide either way)::

    h→_j = RNN→(E_src x_j, h→_{j-1})     h←_j = RNN←(E_src x_j, h←_{j+1})     h_j = [h→_j; h←_j]

Bridge, the decoder's initial state, per layer l::

    unidirectional:  s_0 = h→_S                                  (copied, Sutskever et al., 2014)
    bidirectional:   s_0 = tanh(W_b [h→_S; h←_1] + b_b)          (a linear + tanh bridge, one per layer;
                     an LSTM's cell: c_0 = W_c [c→_S; c←_1] + b_c, no tanh: the cell is unbounded)

Decoder, step i = 1..T, by ``attention``:

``none``: the fixed context vector (Sutskever et al., 2014). The source reaches the decoder only
through s_0; we do not also feed it at every step as Cho et al. (2014) do::

    s_i = RNN(E_tgt y_{i-1}, s_{i-1})                 o_i = s_i

``bahdanau``: additive attention (Bahdanau et al., 2015). The previous state asks, the context
enters the step's input; the paper's maxout deep output is a tanh layer here::

    e_ij = vᵀ tanh(W s_{i-1} + U h_j)       α_ij = softmax_j(e_ij)       c_i = Σ_j α_ij h_j
    s_i = RNN([E_tgt y_{i-1}; c_i], s_{i-1})          o_i = tanh(W_o [s_i; c_i; E_tgt y_{i-1}] + b_o)

``luong-dot`` / ``luong-general``: multiplicative "global" attention (Luong et al., 2015). The new
state asks; with ``input_feeding`` the previous attentional vector joins the input (õ_0 = 0)::

    s_i = RNN([E_tgt y_{i-1}; õ_{i-1}], s_{i-1})      (input_feeding: false -> RNN(E_tgt y_{i-1}, s_{i-1}))
    score(s_i, h_j) = s_iᵀ h_j  (dot)   or   s_iᵀ W_a h_j  (general)
    α_ij = softmax_j(score(s_i, h_j))       c_i = Σ_j α_ij h_j       o_i = õ_i = tanh(W_c [c_i; s_i])

Output, for all kinds::

    p(y_i | y_<i, x) = softmax(W_out P Dropout(o_i) + b_out)

with W_out = E_tgt when ``tie_output`` (or ``share_embeddings``: one matrix for E_src, E_tgt and
W_out, a joint vocabulary) and P a d_hidden -> d_emb projection when tied and the widths differ.

Padding: a source row is read only up to its own length (``Recurrent``'s padding mask: packed
sequences on the fused path), and e_ij = −∞ where x_j is padding, so α_ij is exactly 0 there: what
stands in the padding changes nothing. Dropout acts on the embeddings, between recurrent layers and
on o_i (so input feeding feeds back the dropped-out õ_{i-1}, as OpenNMT does). Every parameter starts
U(−0.1, 0.1) (Sutskever et al.; Luong et al.).

Decoding carries a ``Seq2SeqDecoderState`` (the encoder states, the attention's projection of them
computed once per sentence, the decoder's recurrent state and, with input feeding, õ_{i-1}): the
encoder-decoder protocol of ``lmlab.generate`` (``start_decoding`` / ``decode_step`` / ``reorder``).
Without per-step feedback (``none``, Luong without input feeding) the decoder runs the whole target
through the fused recurrent kernel at once in training; otherwise it loops over the target positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.nn import Recurrent
from lmlab.nn.recurrent import State

CELLS = ("lstm", "gru", "rnn")
ATTENTIONS = ("none", "bahdanau", "luong-dot", "luong-general")


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 0
    """Source vocabulary size (tokenizer + special tokens); 0 means: take it from the data."""
    tgt_vocab_size: int = 0
    """Target vocabulary size; 0 means: take it from the data."""
    cell: str = "lstm"
    """lstm, gru or rnn (Elman, tanh): the encoder's and the decoder's."""
    d_emb: int = 256
    """Token embedding width."""
    d_hidden: int = 512
    """Decoder state width, and the width of the encoder states h_j (d_hidden/2 per direction when
    bidirectional)."""
    n_layers: int = 1
    """Recurrent layers of the encoder and of the decoder (layer l of one starts layer l of the other)."""
    bidirectional: bool = True
    """Bidirectional encoder: h_j = [h→_j; h←_j], and a linear + tanh bridge to the decoder's state."""
    dropout: float = 0.3
    """On the embeddings, between recurrent layers and on the attentional vector o_i."""
    attention: str = "bahdanau"
    """none (the fixed context vector), bahdanau (additive), luong-dot or luong-general (multiplicative)."""
    input_feeding: bool = True
    """Luong attention: feed õ_{i-1} into step i (ignored by the other kinds)."""
    d_attention: int = 0
    """Bahdanau attention: width of W s + U h (0 means d_hidden)."""
    share_embeddings: bool = False
    """One matrix for source embedding, target embedding and output projection (joint vocabulary)."""
    tie_output: bool = True
    """Share the target embedding with the output projection (implied by share_embeddings)."""
    max_len: int = 256
    """The most tokens of a source sentence, and of a translation, special tokens included."""
    fused: bool = True
    """torch's fused recurrent kernels (cuDNN on GPU); false runs the equations step by step."""

    @property
    def block_size(self) -> int:
        """The most positions on either side (what ``lmlab.generate`` caps a translation at)."""
        return self.max_len

    def validate(self) -> None:
        for key, valid in (("cell", CELLS), ("attention", ATTENTIONS)):
            if getattr(self, key) not in valid:
                raise ConfigError(f"model.{key} = '{getattr(self, key)}' is not one of: {', '.join(valid)}")
        for key in ("d_emb", "d_hidden", "n_layers", "max_len"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive (got {getattr(self, key)})")
        if self.d_attention < 0:
            raise ConfigError(f"model.d_attention must be >= 0 (0 means d_hidden), got {self.d_attention}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if self.bidirectional and self.d_hidden % 2:
            raise ConfigError(
                f"model.d_hidden ({self.d_hidden}) must be even with a bidirectional encoder "
                "(d_hidden/2 per direction)"
            )
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "model.share_embeddings needs one joint vocabulary, but src_vocab_size="
                f"{self.src_vocab_size} != tgt_vocab_size={self.tgt_vocab_size}"
            )


class Attention(nn.Module):
    """α_ij = softmax_j score(q_i, h_j) over the real source positions; c_i = Σ_j α_ij h_j.

    Scores (``kind``): bahdanau vᵀ tanh(W q + U h), luong-dot qᵀ h, luong-general qᵀ W_a h. ``keys``
    computes the part that depends on h only (U h, W_a h), once per sentence.
    """

    def __init__(self, kind: str, d_hidden: int, d_attention: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.w_query = nn.Linear(d_hidden, d_attention, bias=False)  # W
            self.w_key = nn.Linear(d_hidden, d_attention)  # U (with the bias of the sum)
            self.v = nn.Linear(d_attention, 1, bias=False)  # v
        elif kind == "luong-general":
            self.w_key = nn.Linear(d_hidden, d_hidden, bias=False)  # W_a

    def keys(self, memory: Tensor) -> Tensor:
        """memory (B, S, d_hidden): the encoder states h_j -> what the score reads of them."""
        return memory if self.kind == "luong-dot" else self.w_key(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, padding_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """query (B, T, d_hidden), keys / memory (B, S, ·), padding_mask (B, S) True at padding ->
        context (B, T, d_hidden), weights α (B, T, S) (each row sums to 1, exactly 0 at padding)."""
        if self.kind == "bahdanau":  # (B, T, 1, A) + (B, 1, S, A) -> (B, T, S)
            scores = self.v(torch.tanh(self.w_query(query)[:, :, None] + keys[:, None])).squeeze(-1)
        else:
            scores = query @ keys.transpose(1, 2)  # (B, T, S)
        if padding_mask is not None:
            scores = scores.masked_fill(padding_mask[:, None, :], float("-inf"))
        alpha = torch.softmax(scores, dim=-1)
        return alpha @ memory, alpha


@dataclass
class EncoderOutput:
    """What the encoder hands the decoder: the states h_j and the bridged initial decoder state s_0."""

    states: Tensor  # (B, S, d_hidden)
    init: State  # (n_layers, B, d_hidden), or (h, c) for the LSTM
    padding_mask: Tensor | None  # (B, S), True at padding


def _rows(state: State, index: Tensor) -> State:
    """Rows ``index`` of a recurrent state (the batch is dimension 1)."""
    if isinstance(state, tuple):
        return (state[0].index_select(1, index), state[1].index_select(1, index))
    return state.index_select(1, index)


@dataclass
class Seq2SeqDecoderState:
    """What incremental decoding carries between steps; rows are (sentence, beam) pairs and
    ``reorder(index)`` keeps rows ``index`` (beam search, finished rows dropped)."""

    memory: Tensor | None  # (N, S, d_hidden): the encoder states h_j; None without attention
    keys: Tensor | None  # (N, S, ·): the attention's keys (U h_j, W_a h_j or h_j); None without attention
    src_padding_mask: Tensor | None  # (N, S), True at padding; None without attention
    rnn: State  # the decoder stack's state: (n_layers, N, d_hidden), or (h, c)
    feed: Tensor | None  # (N, 1, d_hidden): õ_{i-1} (Luong with input feeding), else None

    def reorder(self, index: Tensor) -> None:
        if self.memory is not None:
            keys_are_memory = self.keys is self.memory
            self.memory = self.memory.index_select(0, index)
            if self.keys is not None:
                self.keys = self.memory if keys_are_memory else self.keys.index_select(0, index)
        if self.src_padding_mask is not None:
            self.src_padding_mask = self.src_padding_mask.index_select(0, index)
        if self.feed is not None:
            self.feed = self.feed.index_select(0, index)
        self.rnn = _rows(self.rnn, index)


class Seq2Seq(nn.Module):
    """The RNN encoder-decoder of the module docstring; ``config.attention`` picks the kind."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        config.validate()
        if config.src_vocab_size <= 0 or config.tgt_vocab_size <= 0:
            raise ConfigError(
                "model.src_vocab_size and model.tgt_vocab_size must be set (normally taken from the data)"
            )
        self.config = c = config
        kind, h = c.attention, c.d_hidden
        self.src_emb = nn.Embedding(c.src_vocab_size, c.d_emb)
        self.tgt_emb = self.src_emb if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.d_emb)
        self.drop = nn.Dropout(c.dropout)
        n_dir = 2 if c.bidirectional else 1
        self.encoder = Recurrent(c.cell, c.d_emb, h // n_dir, c.n_layers, c.bidirectional, c.dropout, c.fused)
        # the bridge: W_b (and W_c for an LSTM's cell) of each layer
        self.bridge = nn.ModuleList(nn.Linear(h, h) for _ in range(c.n_layers)) if c.bidirectional else None
        lstm_cell = c.bidirectional and c.cell == "lstm"
        self.bridge_cell = nn.ModuleList(nn.Linear(h, h) for _ in range(c.n_layers)) if lstm_cell else None
        self.input_feeding = kind.startswith("luong") and c.input_feeding
        extra = h if kind == "bahdanau" or self.input_feeding else 0  # c_i or õ_{i-1} in the input
        self.decoder = Recurrent(c.cell, c.d_emb + extra, h, c.n_layers, dropout=c.dropout, fused=c.fused)
        self.attention = Attention(kind, h, c.d_attention or h) if kind != "none" else None
        self.combine: nn.Linear | None = None  # W_o (Bahdanau) or W_c (Luong)
        if kind == "bahdanau":
            self.combine = nn.Linear(2 * h + c.d_emb, h)
        elif kind != "none":
            self.combine = nn.Linear(2 * h, h, bias=False)
        tied = c.share_embeddings or c.tie_output
        self.proj = nn.Linear(h, c.d_emb, bias=False) if tied and h != c.d_emb else None  # P
        self.out_proj = nn.Linear(c.d_emb if tied else h, c.tgt_vocab_size)  # W_out, b_out
        self.reset_parameters()
        if tied:
            self.out_proj.weight = self.tgt_emb.weight

    def reset_parameters(self) -> None:
        """Every parameter U(−0.1, 0.1), as Sutskever et al. (±0.08) and Luong et al. (±0.1)."""
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def num_params(self) -> int:
        """Parameter count (shared matrices counted once)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def cross_attention_shape(self) -> tuple[int, int]:
        """(layers, heads) of attention maps over the source, for ``lmlab.explain``: one, or none."""
        return (1, 1) if self.attention is not None else (0, 0)

    # -- encoder ---------------------------------------------------------------------------------------

    def _bridge(self, final: State) -> State:
        """The encoder's final states -> the decoder's initial state s_0 (see the module docstring)."""
        if self.bridge is None:
            return final

        def joined(s: Tensor) -> Tensor:  # (L·2, B, H/2), rows l·2 + d -> (L, B, H) = [h→; h←] per layer
            n, b, half = s.shape
            return s.view(n // 2, 2, b, half).transpose(1, 2).reshape(n // 2, b, 2 * half)

        if isinstance(final, tuple):
            h, c = joined(final[0]), joined(final[1])
            assert self.bridge_cell is not None
            return (
                torch.stack([torch.tanh(w(x)) for w, x in zip(self.bridge, h)]),
                torch.stack([w(x) for w, x in zip(self.bridge_cell, c)]),
            )
        return torch.stack([torch.tanh(w(x)) for w, x in zip(self.bridge, joined(final))])

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> EncoderOutput:
        """src (B, S) token ids, src_padding_mask (B, S) True at (right) padding -> the encoder
        states h_j (B, S, d_hidden) and the decoder's initial state."""
        states, final = self.encoder(self.drop(self.src_emb(src)), padding_mask=src_padding_mask)
        return EncoderOutput(states, self._bridge(final), src_padding_mask)

    # -- decoder ---------------------------------------------------------------------------------------

    def initial_state(self, memory: EncoderOutput) -> Seq2SeqDecoderState:
        """The decoder state before the first target token (BOS)."""
        if self.attention is None:  # the fixed context: s_0 is all the decoder gets
            return Seq2SeqDecoderState(None, None, None, memory.init, None)
        b = memory.states.size(0)
        feed = memory.states.new_zeros(b, 1, self.config.d_hidden) if self.input_feeding else None
        keys = self.attention.keys(memory.states)
        return Seq2SeqDecoderState(memory.states, keys, memory.padding_mask, memory.init, feed)

    def _attend(self, query: Tensor, st: Seq2SeqDecoderState) -> tuple[Tensor, Tensor]:
        assert self.attention is not None and st.keys is not None and st.memory is not None
        return self.attention(query, st.keys, st.memory, st.src_padding_mask)

    def _run(self, y: Tensor, st: Seq2SeqDecoderState) -> tuple[Tensor, Tensor | None]:
        """y (B, T, d_emb): embedded target inputs -> attentional vectors o (B, T, d_hidden) after
        dropout, and attention weights α (B, T, S) (None without attention). Advances ``st``."""
        kind = self.config.attention
        if kind == "bahdanau":  # s_{i-1} asks; c_i joins the input of step i
            states, contexts, alphas = [], [], []
            for yi in y.unbind(1):  # (B, d_emb) each (unbind: one gradient copy, not one per step)
                rnn_h = st.rnn[0] if isinstance(st.rnn, tuple) else st.rnn
                c, a = self._attend(rnn_h[-1].unsqueeze(1), st)  # query: the top layer's s_{i-1}
                s, st.rnn = self.decoder(torch.cat([yi.unsqueeze(1), c], dim=-1), st.rnn)
                states.append(s)
                contexts.append(c)
                alphas.append(a)
            s, c = torch.cat(states, dim=1), torch.cat(contexts, dim=1)  # (B, T, d_hidden) each
            assert self.combine is not None  # the deep output, for all steps at once
            return self.drop(torch.tanh(self.combine(torch.cat([s, c, y], dim=-1)))), torch.cat(alphas, dim=1)
        if self.input_feeding:  # Luong: õ_{i-1} joins the input of step i
            outs, alphas = [], []
            for yi in y.unbind(1):
                assert st.feed is not None and self.combine is not None
                s, st.rnn = self.decoder(torch.cat([yi.unsqueeze(1), st.feed], dim=-1), st.rnn)
                c, a = self._attend(s, st)
                st.feed = self.drop(torch.tanh(self.combine(torch.cat([c, s], dim=-1))))
                outs.append(st.feed)
                alphas.append(a)
            return torch.cat(outs, dim=1), torch.cat(alphas, dim=1)
        # no step depends on the previous one's attention: the whole target in one recurrent call
        s, st.rnn = self.decoder(y, st.rnn)  # (B, T, d_hidden)
        if kind == "none":
            return self.drop(s), None
        assert self.combine is not None
        c, a = self._attend(s, st)  # Luong without input feeding
        return self.drop(torch.tanh(self.combine(torch.cat([c, s], dim=-1)))), a

    def decode(
        self,
        tgt: Tensor,
        memory: EncoderOutput | None,
        src_padding_mask: Tensor | None = None,
        state: Seq2SeqDecoderState | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """tgt (B, T) target ids (BOS first) -> logits (B, T, tgt_vocab_size).

        Starts from ``memory`` (``encode``'s output; ``src_padding_mask`` defaults to the one it was
        encoded with), or continues ``state`` (then ``tgt`` holds only the next tokens and ``state``
        is advanced). With ``need_weights`` also returns {'cross': [α (B, 1, T, S)]}: one map, one
        head (an empty list without attention).
        """
        if state is None:
            if memory is None:
                raise ValueError("decode needs the encoder's output (memory) or a decoder state")
            if src_padding_mask is not None:
                memory = EncoderOutput(memory.states, memory.init, src_padding_mask)
            state = self.initial_state(memory)
        o, alpha = self._run(self.drop(self.tgt_emb(tgt)), state)
        if self.proj is not None:
            o = self.proj(o)
        logits = self.out_proj(o)  # (B, T, V_tgt)
        if need_weights:
            return logits, {"cross": [alpha[:, None]] if alpha is not None else []}
        return logits

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) (BOS + target) -> logits (B, T, tgt_vocab_size).

        ``tgt_padding_mask`` is accepted for the protocol and not needed: targets are right-padded
        and the decoder reads left to right, so no real position sees a padded one.
        """
        logits = self.decode(tgt_in, self.encode(src, src_padding_mask))
        assert isinstance(logits, Tensor)
        return logits

    # -- incremental decoding (the encoder-decoder protocol of lmlab.generate) -----------------------

    def start_decoding(
        self, src: Tensor, src_padding_mask: Tensor | None = None, max_len: int | None = None, expand: int = 1
    ) -> Seq2SeqDecoderState:
        """Encode ``src`` once (and the attention keys); ``expand`` copies every sentence that many
        times (beams): row b·expand + k is copy k of b. ``max_len`` is accepted for the protocol:
        a recurrent state has no length limit."""
        state = self.initial_state(self.encode(src, src_padding_mask))
        if expand > 1:
            state.reorder(torch.arange(src.size(0), device=src.device).repeat_interleave(expand))
        return state

    def decode_step(self, tokens: Tensor, state: Seq2SeqDecoderState) -> Tensor:
        """tokens: (N, 1) the last token of each row -> next-token logits (N, tgt_vocab_size)."""
        logits = self.decode(tokens, None, state=state)
        assert isinstance(logits, Tensor)
        return logits[:, -1, :]


__all__ = ["Attention", "EncoderOutput", "Seq2Seq", "Seq2SeqConfig", "Seq2SeqDecoderState"]
