"""The sequence models' training steps against PyTorch's CPU eager ones at the same sizes and
threads, taking turns in one process: the names transformer (4 layers, 4 heads, width 64,
block 16, batch 32, AdamW) and the row LSTM of MNIST (28 steps of 28 pixels, 128 units, batch
128, Adam), ours eager and jitted. Medians over rounds, and their ratio to PyTorch.

    python -m benchmarks.sequence [--rounds 5] [--threads 2] [--out benchmarks]
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.report import ms_range, take_turns, write_report  # noqa: E402


def ours(model_name, use_jit):
    from tinygrad_mnist import Tensor, jit, manual_seed, nn, optim
    from tinygrad_mnist.mnist.models import RowLSTM
    from tinygrad_mnist.names.models import Transformer
    manual_seed(0)
    rng = np.random.default_rng(0)
    if model_name == "transformer":
        model = Transformer(27, 16)
        opt = optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.99), weight_decay=0.01)
        x = rng.integers(0, 27, size=(32, 16))
        y = rng.integers(0, 27, size=(32, 16))

        def loss_of(x, y):
            return nn.cross_entropy(model(Tensor(x)).transpose((0, 2, 1)), y)
    else:
        model = RowLSTM()
        opt = optim.Adam(model.parameters(), lr=0.002)
        x = rng.normal(size=(128, 784)).astype(np.float32)
        y = rng.integers(0, 10, size=128)

        def loss_of(x, y):
            return nn.cross_entropy(model(Tensor(x)), y)

    def step(x, y):
        opt.zero_grad()
        loss = loss_of(x, y)
        loss.backward()
        opt.step()
        return loss.detach()
    run = jit(step) if use_jit else step
    run(x, y)
    return lambda: run(x, y)


def torch_gpt(vocab=27, block=16, layers=4, heads=4, width=64):
    """makemore's transformer in PyTorch (token and position embeddings, pre-norm blocks of
    causal multi-head attention and a 4x GELU MLP, a final LayerNorm, a head without bias):
    the same sizes and initialization as names.models.Transformer."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self, w, h):
            super().__init__()
            self.ln_1, self.ln_2 = torch.nn.LayerNorm(w), torch.nn.LayerNorm(w)
            self.attn = torch.nn.MultiheadAttention(w, h, batch_first=True)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(w, 4 * w), torch.nn.GELU(),
                                           torch.nn.Linear(4 * w, w))

        def forward(self, x):
            y = self.ln_1(x)
            mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
            x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class GPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.token = torch.nn.Embedding(vocab, width)
            self.position = torch.nn.Embedding(block, width)
            self.blocks = torch.nn.Sequential(*[Block(width, heads) for _ in range(layers)])
            self.ln_f = torch.nn.LayerNorm(width)
            self.head = torch.nn.Linear(width, vocab, bias=False)

        def forward(self, x):
            h = self.token(x) + self.position(torch.arange(x.shape[1]))
            return self.head(self.ln_f(self.blocks(h)))
    return GPT()


def theirs(model_name):
    import torch
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if model_name == "transformer":
        model = torch_gpt()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.99),
                                weight_decay=0.01)
        x = torch.tensor(rng.integers(0, 27, size=(32, 16)))
        y = torch.tensor(rng.integers(0, 27, size=(32, 16)))

        def loss_of():
            return torch.nn.functional.cross_entropy(model(x).transpose(1, 2), y)
    else:
        lstm, head = torch.nn.LSTM(28, 128, batch_first=True), torch.nn.Linear(128, 10)
        opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=0.002)
        x = torch.tensor(rng.normal(size=(128, 28, 28)).astype(np.float32))
        y = torch.tensor(rng.integers(0, 10, size=128))

        def loss_of():
            return torch.nn.functional.cross_entropy(head(lstm(x)[0][:, -1]), y)

    def step():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        opt.step()
    step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(args.threads)
    rows = []
    with threadpool_limits(args.threads):
        for name, label in (("transformer", "names transformer, batch 32 x 16"),
                            ("lstm", "MNIST row LSTM 128, batch 128 x 28 steps")):
            work = {"PyTorch": theirs(name), "ours, eager": ours(name, False),
                    "ours, jit": ours(name, True)}
            times = take_turns(work, args.rounds)
            base = np.median(times["PyTorch"])
            rows.append(f"| {label} | {ms_range(times['PyTorch'])} | "
                        f"{ms_range(times['ours, eager'])} ({np.median(times['ours, eager']) / base:.1f}x) | "
                        f"{ms_range(times['ours, jit'])} ({np.median(times['ours, jit']) / base:.1f}x) |")
    import platform
    text = "\n".join([
        "# Sequence models: training steps against PyTorch", "",
        f"`python -m benchmarks.sequence --rounds {args.rounds} --threads {args.threads}` on "
        f"{platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}, PyTorch "
        f"{torch.__version__} (CPU, eager); each arm's step timed in turns in one process, "
        f"median (min-max) over {args.rounds} rounds of the median of 3 steps, in ms; the "
        f"ratio is ours over PyTorch's (target: 1.5x or less).", "",
        "| step | PyTorch | ours, eager | ours, jit |", "| --- | --- | --- | --- |", *rows])
    if args.out:
        write_report(args.out, "SEQUENCE.md", text)
    else:
        print(text)


if __name__ == "__main__":
    main()
