"""Building blocks shared by every model family."""

from lmlab.nn.attention import KVCache, ModelCache, MultiHeadAttention, scaled_dot_product_attention
from lmlab.nn.block import TransformerBlock
from lmlab.nn.feedforward import FeedForward
from lmlab.nn.norm import LayerNorm, RMSNorm, make_norm
from lmlab.nn.positional import LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding
from lmlab.nn.recurrent import GRUCell, LSTMCell, Recurrent, RNNCell

__all__ = [
    "KVCache",
    "ModelCache",
    "MultiHeadAttention",
    "scaled_dot_product_attention",
    "TransformerBlock",
    "FeedForward",
    "LayerNorm",
    "RMSNorm",
    "make_norm",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "Recurrent",
]
