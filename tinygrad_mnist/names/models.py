"""The character models `tinygrad-mnist names --arch` builds, as makemore has them (its default
sizes: embeddings and hidden states of 64; the transformer 4 layers, 4 heads, width 64): each
maps a batch of token sequences (B, T) to next-token logits (B, T, V), position t seeing
tokens up to t only."""
import numpy as np

from .. import nn
from ..attention import causal_mask
from ..engine import Tensor

ARCHS = ("bigram", "mlp", "rnn", "gru", "lstm", "transformer")


class Bigram(nn.Module):
    """The next token's logits from the current token alone: a V x V table."""

    def __init__(self, vocab, block):
        self.table = nn.Embedding(vocab, vocab)
        self.table.weight = Tensor.from_numpy(np.zeros((vocab, vocab), np.float32),
                                              requires_grad=True)

    def forward(self, x):
        return self.table(x)


class ContextMLP(nn.Module):
    """Bengio et al. 2003: the embeddings of the previous `block` tokens (the start token
    before the name), concatenated, through a tanh hidden layer."""

    def __init__(self, vocab, block, embed=64, hidden=64):
        self.block = block
        self.embed = nn.Embedding(vocab + 1, embed)      # one more row: "before the start"
        self.hidden = nn.Linear(block * embed, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        n, t = x.shape
        blank = np.full((n, self.block), self.embed.num_embeddings - 1, np.int64)
        # the context of position t: the `block` tokens up to t, newest first
        padded = Tensor.cat([self.embed(Tensor(blank)), self.embed(x)], axis=1)
        context = Tensor.cat([padded[:, self.block - k:self.block - k + t]
                              for k in range(self.block)], axis=2)
        return self.out(self.hidden(context).tanh())


class Recurrent(nn.Module):
    """Embeddings through an RNN, GRU or LSTM, each step's output to the logits (with dropout
    on the layer's inputs and outputs, as Zaremba et al. 2014 regularize theirs)."""

    def __init__(self, vocab, block, kind="gru", embed=64, hidden=64, dropout=0.0):
        self.embed = nn.Embedding(vocab, embed)
        self.cell = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind](
            embed, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.out(self.dropout(self.cell(self.dropout(self.embed(x)))[0]))


class Block(nn.Module):
    """GPT's block: x + causal attention(LayerNorm(x)), then x + MLP(LayerNorm(x)), the MLP 4x
    wide with a GELU."""

    def __init__(self, width, heads, dropout=0.0):
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)         # on attention's output, as GPT-2's

    def forward(self, x, attention=None):
        """With a list `attention`, each head's weights (N, heads, T, T) are appended to it."""
        y = self.ln_1(x)
        mask = causal_mask(x.shape[1])
        out, weights = self.attn(y, y, y, attn_mask=mask, need_weights=attention is not None,
                                 average_attn_weights=False)
        if attention is not None:
            attention.append(weights)
        x = x + self.dropout(out)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """makemore's transformer: token and position embeddings, `layers` blocks, a final
    LayerNorm and a linear head (4 layers, 4 heads, width 64 by default)."""

    def __init__(self, vocab, block, layers=4, heads=4, width=64, dropout=0.0):
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(block, width)
        self.blocks = nn.Sequential(*[Block(width, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, x, attention=None):
        """Next-token logits; with a list `attention`, every block's per-head weights are
        appended to it (the attention maps the gallery draws)."""
        t = x.shape[1]
        h = self.token(x) + self.position(Tensor(np.arange(t)))
        for block in self.blocks:
            h = block(h, attention)
        return self.head(self.ln_f(h))


def build(arch, vocab, block, dropout=0.0, hidden=64):
    """`hidden`: the recurrent models' state and the MLP's hidden layer (makemore's 64)."""
    if arch == "bigram":
        return Bigram(vocab, block)
    if arch == "mlp":
        return ContextMLP(vocab, block, hidden=hidden)
    if arch in ("rnn", "gru", "lstm"):
        return Recurrent(vocab, block, arch, hidden=hidden, dropout=dropout)
    if arch == "transformer":
        return Transformer(vocab, block, dropout=dropout)
    raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")


def sample(model, vocab, count, seed, temperature=1.0):
    """`count` new names drawn token by token from the model (each step the whole prefix, so
    every architecture samples the same way), ending at the end token or the block."""
    from ..engine import no_grad
    rng = np.random.default_rng(seed)
    x = np.zeros((count, 1), dtype=np.int64)
    done = np.zeros(count, dtype=bool)
    with no_grad():
        for _ in range(vocab.block - 1):
            logits = model(Tensor(x)).data[:, -1] / temperature
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            nxt = np.array([rng.choice(len(row), p=row) for row in p])
            nxt[done] = 0
            done |= nxt == 0
            x = np.concatenate([x, nxt[:, None]], axis=1)
            if done.all():
                break
    return [vocab.decode(row[1:]) for row in x]

