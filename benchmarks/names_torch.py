"""makemore's transformer recipe in PyTorch on this project's split of the names: the same
model (benchmarks.sequence.torch_gpt), AdamW at 5e-4 with weight decay 0.01 and betas
(0.9, 0.99), batches of 32 names drawn with replacement, the test loss in nats per character
over every character of the 1,000 held-out names every 500 steps. It separates what the
split does to the test loss from what the engine does: `tinygrad-mnist names` with the same
recipe is compared with this run, not only with makemore's own split.

    python -m benchmarks.names_torch --steps 16000 [--threads 1] [--out benchmarks]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.report import write_report  # noqa: E402
from benchmarks.sequence import torch_gpt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "names"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch
    from tinygrad_mnist.names import data
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    names = data.read_names(args.data_dir)
    vocab = data.Vocabulary(names)
    train, test = data.split(names)
    x_train, y_train = (torch.tensor(a) for a in vocab.encode(train))
    x_test, y_test = (torch.tensor(a) for a in vocab.encode(test))
    model = torch_gpt(vocab.size, vocab.block)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.99), eps=1e-8,
                            weight_decay=0.01)
    history, seconds = [], 0.0
    for step in range(1, args.steps + 1):
        rows = torch.tensor(np.random.default_rng([args.seed, step]).integers(
            0, len(x_train), size=32))
        started = time.perf_counter()
        logits = model(x_train[rows])
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y_train[rows],
                                                 ignore_index=data.IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - started
        if step % 500 == 0:
            with torch.no_grad():
                test_loss = torch.nn.functional.cross_entropy(
                    model(x_test).transpose(1, 2), y_test, ignore_index=data.IGNORE).item()
            history.append({"step": step, "test_loss": test_loss, "seconds": seconds})
            print(f"step {step:6d}  test loss {test_loss:.4f}  {seconds:.1f}s", flush=True)
    best = min(history, key=lambda h: h["test_loss"])
    rows = "\n".join(f"| {h['step']:,} | {h['test_loss']:.4f} | {h['seconds']:.1f} |"
                     for h in history if h["step"] % 2500 == 0 or h is best)
    text = "\n".join([
        "# makemore's transformer recipe in PyTorch on this project's split", "",
        f"`python -m benchmarks.names_torch --steps {args.steps} --threads {args.threads}`: "
        f"PyTorch {torch.__version__} (CPU), seed {args.seed}; test loss in nats per "
        f"character over the 1,000 held-out names of names/data.split; best "
        f"{best['test_loss']:.4f} at step {best['step']:,}.", "",
        "| step | test loss | training seconds |", "| --- | --- | --- |", rows])
    if args.out:
        write_report(args.out, "NAMES_TORCH.md", text)
        with open(os.path.join(args.out, "names_torch.json"), "w") as f:
            json.dump(history, f)
    else:
        print(text)


if __name__ == "__main__":
    main()
