"""Attention as PyTorch has it: scaled dot-product attention with a boolean or additive mask,
and nn.MultiheadAttention with the same parameters (in_proj_weight, in_proj_bias,
out_proj.weight, out_proj.bias), arguments and return values, so that a state_dict loads
across. Built from the engine's ops (linear, matmul, softmax): its gradients, forward mode and
vmap come with them.

    attention(q, k, v) = softmax(q k^T / sqrt(d) + mask) v

Masks mean what they mean in PyTorch: for scaled_dot_product_attention a boolean attn_mask
is True where attention is allowed; for MultiheadAttention a boolean attn_mask or
key_padding_mask is True where it is blocked; a float mask is added to the scores (-inf where
not allowed). A row with every key masked gives NaN, as in PyTorch.
"""
import math

import numpy as np

from .engine import Tensor, get_rng, ops
from .module import Dropout, Linear, Module, _as_tensor, _size


def causal_mask(length):
    """The boolean mask (length, length) that lets position i attend to positions <= i."""
    return np.triu(np.ones((length, length), dtype=bool), k=1)


def _additive(mask, dtype, blocked_when=True):
    """A mask as numbers to add to the scores: 0 where allowed, -inf where not (a boolean
    mask is `blocked_when` where attention is not allowed)."""
    mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.dtype == bool:
        return np.where(mask == blocked_when, -np.inf, 0.0).astype(dtype)
    return mask.astype(dtype)


def _attend(q, k, v, additive=None, is_causal=False, dropout=None):
    """softmax(q k^T / sqrt(d) + additive) v over the last two axes: (output, weights)."""
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        scores = scores + _additive(causal_mask(q.shape[-2])[:, :k.shape[-2]], scores.dtype)
    if additive is not None:
        scores = scores + additive
    weights = scores.softmax(axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    """softmax(q k^T / sqrt(d) + mask) v over the last two axes, as
    torch.nn.functional.scaled_dot_product_attention: a boolean attn_mask is True where
    attention is allowed, a float one is added to the scores; is_causal lets each query see
    the keys up to its own position."""
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    additive = None if attn_mask is None else _additive(attn_mask, q.dtype, blocked_when=False)
    return _attend(q, k, v, additive, is_causal)[0]


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention: module(query, key, value, attn_mask=None, need_weights=True,
    key_padding_mask=None, average_attn_weights=True, is_causal=False) -> (output, weights or
    None) (pass the masks by name: PyTorch's fourth positional argument is key_padding_mask). Inputs (L, N, E), or (N, L, E) with batch_first, or unbatched
    (L, E); weights (N, L, S), per head (N, heads, L, S) without averaging. Initialization as
    PyTorch's: in_proj_weight Xavier-uniform, out_proj U(-1/sqrt(E), 1/sqrt(E)), biases 0."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        embed_dim = _size("MultiheadAttention", "embed_dim", embed_dim)
        num_heads = _size("MultiheadAttention", "num_heads", num_heads)
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first = embed_dim, num_heads, batch_first
        self.head_dim = embed_dim // num_heads
        bound = math.sqrt(6.0 / (embed_dim + 3 * embed_dim))        # xavier over (3E, E)
        weight = get_rng().uniform(-bound, bound, size=(3 * embed_dim, embed_dim))
        self.in_proj_weight = Tensor.from_numpy(weight.astype(np.float32), requires_grad=True)
        self.in_proj_bias = Tensor.zeros(3 * embed_dim, requires_grad=True) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        limit = 1.0 / math.sqrt(embed_dim)
        self.out_proj.weight = Tensor.from_numpy(get_rng().uniform(
            -limit, limit, size=(embed_dim, embed_dim)).astype(np.float32), requires_grad=True)
        self.dropout = dropout
        self.attention_dropout = Dropout(dropout)

    def _heads(self, x, n, length):
        """(N, L, E) -> (N, heads, L, head_dim)."""
        return x.reshape((n, length, self.num_heads, self.head_dim)).transpose((0, 2, 1, 3))

    def forward(self, query, key, value, attn_mask=None, need_weights=True,
                key_padding_mask=None, average_attn_weights=True, is_causal=False):
        query, key, value = (_as_tensor(t) for t in (query, key, value))
        E = self.embed_dim
        if query.shape[-1] != E or key.shape[-1] != E or value.shape[-1] != E:
            raise ValueError(f"MultiheadAttention: query, key and value must end in "
                             f"embed_dim {E}, got {query.shape}, {key.shape}, {value.shape}")
        batched = query.ndim == 3
        if not batched:                                  # (L, E): a batch of one
            query, key, value = (t.reshape((1,) + t.shape) for t in (query, key, value))
        elif not self.batch_first:                       # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose((1, 0, 2)) for t in (query, key, value))
        n, length, source = query.shape[0], query.shape[1], key.shape[1]
        w, b = self.in_proj_weight, self.in_proj_bias
        parts = [(w[i * E:(i + 1) * E], None if b is None else b[i * E:(i + 1) * E])
                 for i in range(3)]
        q, k, v = (ops.Linear.apply(t, pw) if pb is None else ops.Linear.apply(t, pw, pb)
                   for t, (pw, pb) in zip((query, key, value), parts))
        q, k, v = self._heads(q, n, length), self._heads(k, n, source), self._heads(v, n, source)
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, q.dtype)
            if mask.ndim == 3:                           # (N * heads, L, S)
                mask = mask.reshape((n, self.num_heads, length, source))
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, q.dtype).reshape((n, 1, 1, source))
            mask = padding if mask is None else mask + padding
        out, weights = _attend(
            q, k, v, mask, is_causal=is_causal and attn_mask is None,
            dropout=self.attention_dropout if self.training and self.dropout else None)
        out = out.transpose((0, 2, 1, 3)).reshape((n, length, E))
        out = self.out_proj(out)
        if not batched:
            out = out.reshape((length, E))
        elif not self.batch_first:
            out = out.transpose((1, 0, 2))
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(axis=1)
        return out, weights if batched else weights.reshape(weights.shape[1:])

    def __repr__(self):
        return (f"MultiheadAttention({self.embed_dim}, num_heads={self.num_heads}"
                f"{', batch_first=True' if self.batch_first else ''})")
