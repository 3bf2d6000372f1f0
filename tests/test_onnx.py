"""ONNX export checked by a second runtime (onnxruntime) on the whole MNIST test set, for every
architecture the trainer builds; the file valid under onnx.checker and read back by onnx.load;
import into the engine giving the same outputs and gradients, and gradients that finite
differences confirm."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor, manual_seed, nn, optim
from tinygrad_mnist import onnx as exchange
from tinygrad_mnist.gradcheck import gradcheck
from tinygrad_mnist.onnx.export import OPSET
from tinygrad_mnist.mnist import data
from tinygrad_mnist.mnist.cli import main as cli
from tinygrad_mnist.mnist.evaluation import predict_logits
from tinygrad_mnist.mnist.models import ARCHS, build
from tinygrad_mnist.names.models import ARCHS as NAMES_ARCHS
from tinygrad_mnist.names.models import build as build_names

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load("mnist", mnist_dir, progress=False)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _trained(arch, ds, steps):
    """The model after `steps` Adam steps on batches of 128 (answers with clear margins)."""
    manual_seed(0)
    model = build(arch)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = ds.normalized(ds.train_images[:128 * steps]), ds.train_labels[:128 * steps]
    for i in range(0, len(x), 128):
        opt.zero_grad()
        nn.cross_entropy(model(Tensor(x[i:i + 128])), y[i:i + 128].astype(np.int64)).backward()
        opt.step()
    if arch == "cnn":                 # running statistics of their own, not the initial 0 and 1
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_var.data[:] = np.linspace(0.5, 2, layer.num_features)
    return model.eval()


STEPS = {"mlp": 60, "lenet5": 30, "cnn": 6, "lstm": 6, "vit": 4, "dpcnn": 30}


@pytest.mark.parametrize("arch", ARCHS)
def test_onnxruntime_gives_our_outputs_on_the_whole_test_set(arch, mnist, tmp_path):
    model = _trained(arch, mnist, STEPS[arch])
    x = mnist.normalized(mnist.test_images)
    path = tmp_path / f"{arch}.onnx"
    exchange.export(model, x[:3], path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    ours = predict_logits(model, x, batch_size=500)
    theirs = np.concatenate([_session(path).run(None, {"input": x[i:i + 2500]})[0]
                             for i in range(0, len(x), 2500)])        # another batch size
    # float32 logits of size 10 carry rounding of about 1e-6 each: within 1e-5 of each
    # logit's scale, and the probabilities within 1e-5
    scale = np.maximum(1, np.abs(ours).max(axis=1, keepdims=True))
    assert (np.abs(ours - theirs) / scale).max() <= 1e-5
    assert np.abs(_softmax(ours) - _softmax(theirs)).max() <= 1e-5
    top2 = np.sort(ours, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-5       # where rounding could not swap the answer
    assert clear.mean() > 0.999
    assert np.array_equal(ours.argmax(1)[clear], theirs.argmax(1)[clear])
    if arch in ("mlp", "lenet5"):                # trained enough to answer every image clearly
        assert np.array_equal(ours.argmax(1), theirs.argmax(1))


@pytest.mark.parametrize("arch", NAMES_ARCHS)
def test_the_character_models_of_names_run_in_onnxruntime_and_read_back(arch, tmp_path):
    """Token ids in (embeddings), then an MLP over the context, an RNN, GRU or LSTM, or a
    causal transformer: the sequence models, written as compositions of the engine's ops."""
    manual_seed(5)
    model = build_names(arch, 27, 8).eval()
    tokens = np.random.default_rng(0).integers(0, 27, (6, 8))
    exchange.export(model, tokens[:3], tmp_path / "names.onnx")
    ours = model(Tensor.from_numpy(tokens)).numpy()
    theirs = _session(tmp_path / "names.onnx").run(None, {"input": tokens})[0]
    np.testing.assert_allclose(theirs, ours, atol=1e-5 * max(1, np.abs(ours).max()))
    again = exchange.load(tmp_path / "names.onnx")(Tensor.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(again, ours, atol=1e-5 * max(1, np.abs(ours).max()))


def test_the_file_names_its_axes_and_leaves_the_batch_free(tmp_path):
    manual_seed(1)
    model = build("lenet5")
    proto = exchange.export(model, np.zeros((3, 784), np.float32), tmp_path / "m.onnx",
                            input_name="pixels", output_name="scores")
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["scores"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 784
    assert proto.opset_import[0].version == OPSET
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, 784)).astype(np.float32)
        out = _session(tmp_path / "m.onnx").run(None, {"pixels": x})[0]
        assert out.shape == (n, 10)
        np.testing.assert_allclose(out, model(Tensor(x)).numpy(), atol=1e-5)
    assert model.training                        # exported in eval mode, then left as it was


def test_dropout_is_left_out_and_batch_norm_runs_on_its_running_statistics(tmp_path):
    manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(5, 3))
    model[1].running_mean.data[:] = np.arange(5)
    model[1].running_var.data[:] = np.arange(1, 6)
    proto = exchange.export(model, np.zeros((4, 6), np.float32), tmp_path / "m.onnx")
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    x = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    h = x @ model[0].weight.numpy().T + model[0].bias.numpy()
    h = (h - np.arange(5)) / np.sqrt(np.arange(1, 6) + 1e-5)     # weight 1, bias 0
    expected = np.maximum(h, 0) @ model[4].weight.numpy().T + model[4].bias.numpy()
    out = _session(tmp_path / "m.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_an_exported_model_read_back_gives_the_same_outputs_and_gradients(arch, tmp_path):
    """In float64, so that any difference is a different computation, not rounding."""
    manual_seed(3)
    model = build(arch).eval()
    for p in list(model.parameters()) + [b for _, b in model.named_buffers()]:
        p.data = p.data.astype(np.float64)
    x = np.random.default_rng(0).standard_normal((5, 784))
    exchange.export(model, x[:3], tmp_path / "m.onnx")
    loaded = exchange.load(tmp_path / "m.onnx")
    assert sorted(loaded.weights) == sorted(name for name, _ in model.named_parameters())
    y = np.arange(5) % 10
    results = []
    for m in (model, loaded):
        inputs = Tensor.from_numpy(x.copy(), requires_grad=True)
        m.zero_grad()
        nn.cross_entropy(m(inputs), y).backward()
        grads = {name: p.grad for name, p in m.named_parameters()}
        results.append((m(Tensor.from_numpy(x)).numpy(), inputs.grad, grads))
    (out, gx, grads), (out2, gx2, grads2) = results
    np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx2, gx, rtol=1e-10, atol=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(grads2["weights." + name], g, rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_a_loaded_models_gradients_agree_with_finite_differences(tmp_path):
    manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 4), nn.LayerNorm(4), nn.GELU(),
                          nn.Linear(4, 3))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 1, 6, 6))
    exchange.export(model, x, tmp_path / "m.onnx")
    loaded = exchange.load(tmp_path / "m.onnx")
    weights = list(loaded.weights.values())
    assert gradcheck(lambda inp, *ws: (loaded(inp) ** 2).sum(),
                     [Tensor.from_numpy(x, requires_grad=True), *weights])


def test_the_cli_exports_a_trained_model_that_reads_pixels(tmp_path, mnist_dir):
    run = tmp_path / "run"
    assert cli(["train", "--data-dir", str(mnist_dir), "--out", str(run), "--epochs", "1",
                "--subset", "2000", "--hidden", "32", "--quiet"]) == 0
    out = tmp_path / "model.onnx"
    assert cli(["export", "--model", str(run / "model.npz"), "--format", "onnx", "--out",
                str(out)]) == 0
    ds = data.load("mnist", mnist_dir, progress=False, splits=("test",))
    pixels = ds.test_images[:500].reshape(500, -1).astype(np.float32) / 255
    theirs = _session(out).run(None, {"pixels": pixels})[0]
    from tinygrad_mnist.mnist.cli import load_model
    model, _ = load_model(run / "model.npz")
    ours = predict_logits(model, ds.normalized(ds.test_images[:500]))
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert cli(["export", "--model", str(run / "model.npz"), "--format", "tflite",
                "--out", str(out)]) == 2


def test_what_cannot_be_written_or_read_is_named(tmp_path):
    class Sorts(nn.Module):
        def __init__(self):
            self.w = Tensor(np.ones(3, np.float32), requires_grad=True)

        def forward(self, x):
            return (x * self.w).argmax(axis=1).astype(np.float32)[:, None] + (x * self.w).abs()
    with pytest.raises(ValueError, match="argmax, which has no ONNX rule"):
        exchange.export(Sorts(), np.zeros((2, 3), np.float32), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ValueError, match="batch of at least 2"):
        exchange.export(nn.Linear(3, 2), np.zeros((1, 3), np.float32), tmp_path / "m.onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Hardmax", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "h.onnx"))
    with pytest.raises(ValueError, match="Hardmax, which is not read"):
        exchange.load(tmp_path / "h.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx"):
        exchange.load(tmp_path / "bad.onnx")
