"""ONNX export against onnxruntime, and the file read back into the engine, for every
architecture the trainer builds: the largest differences on the whole MNIST test set.

    python -m benchmarks.onnx [--out benchmarks]

Each model is trained briefly (Adam, batches of 128, as tests/test_onnx.py does), exported
from a batch of 3 and run by onnxruntime in batches of 2,500; read back with onnx.load, its
logits and its gradients (the mean cross-entropy of 128 test images, with respect to every
parameter and the input) are compared with the original's. Writes ONNX.md into --out.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks.report import arguments, write_report  # noqa: E402
from tinygrad_mnist import Tensor, manual_seed, nn, optim  # noqa: E402
from tinygrad_mnist import onnx as exchange  # noqa: E402
from tinygrad_mnist.mnist import data  # noqa: E402
from tinygrad_mnist.mnist.evaluation import predict_logits  # noqa: E402
from tinygrad_mnist.mnist.models import ARCHS, build, describe  # noqa: E402

STEPS = {"mlp": 60, "lenet5": 30, "cnn": 6, "lstm": 6, "vit": 4, "dpcnn": 30}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trained(arch, ds):
    manual_seed(0)
    model = build(arch)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = ds.normalized(ds.train_images[:128 * STEPS[arch]]), ds.train_labels.astype(np.int64)
    for i in range(0, len(x), 128):
        opt.zero_grad()
        nn.cross_entropy(model(Tensor(x[i:i + 128])), y[i:i + 128]).backward()
        opt.step()
    return model.eval()


def gradients(model, x, y):
    model.eval()
    inputs = Tensor.from_numpy(x.copy(), requires_grad=True)
    model.zero_grad()
    nn.cross_entropy(model(inputs), y).backward()
    return [inputs.grad] + [p.grad for _, p in sorted(model.named_parameters(),
                                                       key=lambda item: item[0].split(".", 1)[-1]
                                                       if item[0].startswith("weights.")
                                                       else item[0])]


def main():
    import onnxruntime as ort
    args = arguments(__doc__)
    ds = data.load("mnist", os.path.join(ROOT, "..", "shared", "data", "mnist"), progress=False)
    x, labels = ds.normalized(ds.test_images), ds.test_labels.astype(np.int64)
    lines = ["# ONNX: onnxruntime and the round trip, on the whole MNIST test set", "",
             "`python -m benchmarks.onnx`: " + __doc__.split("\n\n")[2].replace("\n", " "),
             "", "| model | nodes | max abs logit diff (onnxruntime) | relative to the logits' "
             "size | max prob diff | same answer | read back: max logit diff | read back: max "
             "gradient diff |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHS:
            model = trained(arch, ds)
            path = os.path.join(tmp, f"{arch}.onnx")
            proto = exchange.export(model, x[:3], path)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            ours = predict_logits(model, x, batch_size=500)
            theirs = np.concatenate([session.run(None, {"input": x[i:i + 2500]})[0]
                                     for i in range(0, len(x), 2500)])
            diff = np.abs(ours - theirs)
            scale = np.maximum(1, np.abs(ours).max(axis=1, keepdims=True))

            def softmax(z):
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return e / e.sum(axis=1, keepdims=True)
            prob = np.abs(softmax(ours) - softmax(theirs)).max()
            same = int((ours.argmax(1) == theirs.argmax(1)).sum())
            loaded = exchange.load(path)
            again = predict_logits(loaded, x, batch_size=500)
            g1, g2 = gradients(model, x[:128], labels[:128]), gradients(loaded, x[:128],
                                                                          labels[:128])
            gdiff = max(float(np.abs(a - b).max()) for a, b in zip(g1, g2))
            name = describe(arch, (512, 256), "relu")
            lines.append(f"| {name} | {len(proto.graph.node)} | {diff.max():.2e} | "
                         f"{(diff / scale).max():.2e} | {prob:.2e} | {same} of {len(x)} | "
                         f"{np.abs(again - ours).max():.2e} | {gdiff:.2e} |")
            print(lines[-1], flush=True)
    write_report(args.out, "ONNX.md", "\n".join(lines))


if __name__ == "__main__":
    main()
