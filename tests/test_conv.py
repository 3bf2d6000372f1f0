"""Convolution, pooling and batch norm against loops written from the definitions, finite
differences and closed forms; their layers; conv nets training, replayed and resumed."""
import itertools

import numpy as np
import pytest

from tinygrad_mnist import Tensor, jit, manual_seed, nn, no_grad, optim
from tinygrad_mnist.gradcheck import gradcheck, gradgradcheck
from tinygrad_mnist.mnist import data, models


def f64(array, requires_grad=False):
    return Tensor(np.array(array, dtype=np.float64), requires_grad=requires_grad,
                  dtype=np.float64)


# ---------------------------------------------------------------- loops from the definitions

def naive_conv2d(x, w, b, stride, padding, dilation, groups):
    """out[n, o, i, j] = b[o] + sum over the group's channels c and kernel (p, q) of
    w[o, c, p, q] * x_padded[n, g * C/g + c, i * sh + p * dh, j * sw + q * dw]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c_in, h, wd = x.shape
    c_out, per_group, kh, kw = w.shape
    xp = np.zeros((n, c_in, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, c_out, oh, ow))
    outs_per_group = c_out // groups
    for n_, o, i, j in itertools.product(range(n), range(c_out), range(oh), range(ow)):
        g = o // outs_per_group
        total = 0.0 if b is None else b[o]
        for c, p, q in itertools.product(range(per_group), range(kh), range(kw)):
            total += w[o, c, p, q] * xp[n_, g * per_group + c, i * sh + p * dh, j * sw + q * dw]
        out[n_, o, i, j] = total
    return out


def naive_pool(x, kind, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
        out[:, :, i, j] = window.max(axis=(2, 3)) if kind == "max" else window.mean(axis=(2, 3))
    return out


CONV_CASES = [  # (N, C, H, W, O, kernel, stride, padding, dilation, groups, bias)
    (2, 3, 7, 6, 4, (3, 3), (1, 1), (0, 0), (1, 1), 1, True),
    (1, 2, 9, 8, 3, (3, 2), (2, 3), (1, 2), (1, 1), 1, False),
    (2, 4, 8, 9, 6, (3, 3), (1, 2), (2, 1), (2, 1), 2, True),
    (1, 6, 5, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1), 6, True),      # depthwise 1x1
    (2, 1, 6, 7, 2, (5, 4), (1, 1), (2, 2), (1, 1), 1, True),
    (1, 4, 11, 10, 4, (2, 3), (3, 2), (1, 1), (2, 3), 4, False),   # depthwise, dilated
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-g{c[9]}")
def test_conv2d_values_and_gradients_match_the_definition(case):
    n, c, h, w, o, kernel, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((o, c // groups, *kernel))
    b = rng.standard_normal(o) if bias else None
    expected = naive_conv2d(x, weight, b, stride, padding, dilation, groups)
    xt, wt = f64(x, requires_grad=True), f64(weight, requires_grad=True)
    bt = f64(b, requires_grad=True) if bias else None
    out = xt.conv2d(wt, bt, stride, padding, dilation, groups)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    # the gradients of sum(out * G) by the definition: d/dw[o,c,p,q] = sum G * x_shifted, ...
    # checked here against finite differences of the naive loop itself
    upstream = rng.standard_normal(expected.shape)
    (out * f64(upstream)).sum().backward()

    def loss(xv, wv, bv):
        return (naive_conv2d(xv, wv, bv, stride, padding, dilation, groups) * upstream).sum()

    eps = 1e-6
    for name, array, grad in (("x", x, xt.grad), ("weight", weight, wt.grad)):
        for index in [tuple(rng.integers(0, s) for s in array.shape) for _ in range(4)]:
            plus, minus = array.copy(), array.copy()
            plus[index] += eps
            minus[index] -= eps
            args = {"x": (x, weight, b), "weight": (x, weight, b)}[name]
            args_plus = (plus, weight, b) if name == "x" else (x, plus, b)
            args_minus = (minus, weight, b) if name == "x" else (x, minus, b)
            numeric = (loss(*args_plus) - loss(*args_minus)) / (2 * eps)
            assert grad[index] == pytest.approx(numeric, rel=1e-6, abs=1e-8), (name, index)
            del args
    if bias:
        np.testing.assert_allclose(bt.grad, upstream.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES[:4], ids=lambda c: "x".join(map(str, c[:5])))
def test_conv2d_second_derivatives(case):
    n, c, h, w, o, kernel, stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(1)
    x = f64(rng.standard_normal((1, c, h, w)), requires_grad=True)
    weight = f64(rng.standard_normal((o, c // groups, *kernel)), requires_grad=True)

    def f(x, weight):      # a nonlinearity after it, so second derivatives are not all zero
        return x.conv2d(weight, None, stride, padding, dilation, groups).tanh()
    assert gradcheck(f, (x, weight), fast_mode=True)
    assert gradgradcheck(f, (x, weight))


def test_conv2d_unbatched_and_same_padding():
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((2, 6, 5)), rng.standard_normal((3, 2, 3, 3))
    out = f64(x).conv2d(f64(weight), padding="same")
    assert out.shape == (3, 6, 5)
    np.testing.assert_allclose(out.data, naive_conv2d(x[None], weight, None, (1, 1), (1, 1),
                                                      (1, 1), 1)[0], atol=1e-12)
    valid = f64(x[None]).conv2d(f64(weight), padding="valid")
    assert valid.shape == (1, 3, 4, 3)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel,stride,padding", [((2, 2), None, (0, 0)), ((3, 3), (2, 2), (1, 1)),
                                                   ((3, 2), (1, 2), (1, 0)), ((2, 3), (3, 1), (0, 1))])
def test_pooling_values_and_gradients(kind, kernel, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 8))
    pool = getattr(Tensor, f"{kind}_pool2d")
    out = pool(f64(x), kernel, stride, padding)
    np.testing.assert_allclose(out.data, naive_pool(x, kind, kernel, stride or kernel, padding),
                               atol=1e-12)
    assert gradcheck(lambda t: pool(t, kernel, stride, padding),
                     (f64(x, requires_grad=True),), fast_mode=True)
    assert gradgradcheck(lambda t: pool(t, kernel, stride, padding) ** 2,
                         (f64(x[:1, :1], requires_grad=True),))


def test_max_pool_gives_a_tie_to_the_first_maximum_of_each_window():
    x = Tensor(np.array([[[[1., 1., 0., 2.],
                           [1., 0., 2., 2.]]]]), requires_grad=True)
    x.max_pool2d(2).sum().backward()
    # PyTorch's rule: the first maximum in row-major order of the window gets the gradient
    np.testing.assert_array_equal(x.grad, [[[[1, 0, 0, 1], [0, 0, 0, 0]]]])
    y = Tensor(np.zeros((1, 1, 3, 3)), requires_grad=True)
    y.max_pool2d(2, stride=1).sum().backward()      # overlapping windows all pick (0, 0) first
    np.testing.assert_array_equal(y.grad[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_avg_pool_counts_padding_in_the_average():
    out = Tensor(np.ones((1, 1, 2, 2))).avg_pool2d(2, stride=2, padding=1)
    np.testing.assert_allclose(out.data[0, 0], [[0.25, 0.25], [0.25, 0.25]])


@pytest.mark.parametrize("call,message", [
    (lambda: Tensor.zeros(1, 3, 8, 8).conv2d(Tensor.zeros(4, 2, 3, 3)),
     r"conv2d: input \(1, 3, 8, 8\) has 3 channels; weight \(4, 2, 3, 3\)"),
    (lambda: Tensor.zeros(1, 1, 4, 4).conv2d(Tensor.zeros(2, 1, 7, 7), padding=1),
     r"conv2d: the kernel spans 7x7 .* padded input is only 6x6 \(input 4x4"),
    (lambda: Tensor.zeros(1, 1, 4, 4).conv2d(Tensor.zeros(2, 1, 3, 3), stride=-1),
     r"conv2d of input \(1, 1, 4, 4\) and weight \(2, 1, 3, 3\): stride must be at least 1, "
     r"got -1"),
    (lambda: Tensor.zeros(8, 8).conv2d(Tensor.zeros(2, 1, 3, 3)),
     r"conv2d: expected an NCHW input .* got shape \(8, 8\)"),
    (lambda: Tensor.zeros(1, 2, 4, 4).conv2d(Tensor.zeros(3, 2, 3, 3), Tensor.zeros(2)),
     r"conv2d: bias must have shape \(3,\)"),
    (lambda: Tensor.zeros(1, 1, 4, 4).max_pool2d(2, padding=2),
     r"max_pool2d of input \(1, 1, 4, 4\): padding .* at most half the kernel"),
    (lambda: Tensor.zeros(1, 1, 2, 2).avg_pool2d(3),
     r"avg_pool2d of input \(1, 1, 2, 2\): the kernel spans 3x3"),
    (lambda: nn.Conv2d(3, 8, 3)(Tensor.zeros(2, 1, 28, 28)),
     r"conv2d: input of shape \(2, 1, 28, 28\) does not fit Conv2d\(3→8, 3x3\)"),
    (lambda: nn.BatchNorm2d(4)(Tensor.zeros(2, 3, 5, 5)),
     r"BatchNorm2d: input of shape \(2, 3, 5, 5\) does not fit"),
])
def test_malformed_input_is_one_error_naming_the_op_and_shapes(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# ---------------------------------------------------------------- layers

def test_conv2d_layer_has_pytorchs_shapes_and_initialization():
    manual_seed(0)
    layer = nn.Conv2d(6, 16, 5, groups=2)
    assert layer.weight.shape == (16, 3, 5, 5) and layer.bias.shape == (16,)
    bound = 1 / np.sqrt(3 * 25)
    for p in (layer.weight, layer.bias):
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.9 * bound
    # the uniform's variance, bound^2 / 3, within sampling error
    assert layer.weight.data.var() == pytest.approx(bound ** 2 / 3, rel=0.1)


def _batch_norm_reference(x, weight, bias, eps, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    shape = [1] * x.ndim
    shape[1] = -1
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("layer,shape", [(nn.BatchNorm2d, (4, 3, 5, 6)), (nn.BatchNorm1d, (6, 3)),
                                         (nn.BatchNorm1d, (4, 3, 7))])
def test_batch_norm_train_eval_and_running_statistics(layer, shape):
    rng = np.random.default_rng(4)
    bn = layer(3, momentum=0.2)
    bn.weight.data[:] = rng.uniform(0.5, 2, 3)
    bn.bias.data[:] = rng.standard_normal(3)
    axes = (0,) + tuple(range(2, len(shape)))
    m = int(np.prod([shape[a] for a in axes]))
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.standard_normal(shape) * 3 + 1
        out = bn(Tensor(x.astype(np.float32)))
        np.testing.assert_allclose(out.data, _batch_norm_reference(
            x, bn.weight.data, bn.bias.data, 1e-5, axes), rtol=1e-4, atol=1e-4)
        # PyTorch's update: the unbiased batch variance goes into the running variance
        running_mean = 0.8 * running_mean + 0.2 * x.mean(axis=axes)
        running_var = 0.8 * running_var + 0.2 * x.var(axis=axes) * m / (m - 1)
        np.testing.assert_allclose(bn.running_mean.data, running_mean, rtol=1e-5)
        np.testing.assert_allclose(bn.running_var.data, running_var, rtol=1e-5)
    bn.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    shape1 = [1] * len(shape)
    shape1[1] = -1
    expected = ((x - running_mean.reshape(shape1)) / np.sqrt(running_var.reshape(shape1) + 1e-5)
                * bn.weight.data.reshape(shape1) + bn.bias.data.reshape(shape1))
    before = bn.running_mean.data.copy()
    np.testing.assert_allclose(bn(Tensor(x)).data, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bn.running_mean.data, before)       # eval changes nothing


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_to_second_order(training):
    rng = np.random.default_rng(5)
    bn = nn.BatchNorm2d(2)
    bn.train(training)
    bn.running_mean.data[:] = [0.3, -0.2]
    bn.running_var.data[:] = [1.5, 0.7]
    x = f64(rng.standard_normal((3, 2, 2, 3)), requires_grad=True)
    w = f64(rng.uniform(0.5, 2, 2), requires_grad=True)
    b = f64(rng.standard_normal(2), requires_grad=True)
    from tinygrad_mnist.engine.norm import BatchNorm

    def f(x, w, b):        # running statistics copied: a check must not move them
        mean, var = f64(bn.running_mean.data), f64(bn.running_var.data)
        return BatchNorm.apply(x, w, b, mean, var, axes=(0, 2, 3), eps=1e-5, momentum=0.1,
                               training=training).tanh()
    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_norm_on_channels_last_memory_equals_the_plain_layout(training, channels):
    """What conv2d returns (NCHW seen over channels-last memory) takes a faster path: its
    output, running statistics and gradients equal those of the same values laid out NCHW
    (float32, so to its rounding)."""
    rng = np.random.default_rng(7)
    nhwc = rng.standard_normal((4, 5, 6, channels)) * 2 + 0.5
    gz = rng.standard_normal((4, channels, 5, 6))
    results = []
    for x in (nhwc.transpose(0, 3, 1, 2), np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))):
        bn = nn.BatchNorm2d(channels, momentum=0.3)
        bn.weight.data[:] = np.linspace(0.5, 2, channels)
        bn.bias.data[:] = np.linspace(-1, 1, channels)
        bn.running_mean.data[:] = np.linspace(0.1, 0.2, channels)
        bn.running_var.data[:] = np.linspace(0.8, 1.5, channels)
        bn.train(training)
        xt = Tensor(x, requires_grad=True)
        out = bn(xt)
        (out * Tensor(gz)).sum().backward()
        results.append([out.data, xt.grad, bn.weight.grad, bn.bias.grad,
                        bn.running_mean.data.copy(), bn.running_var.data.copy()])
    for fast, plain in zip(*results):
        assert fast.dtype == plain.dtype == np.float32
        np.testing.assert_allclose(fast, plain, rtol=2e-5, atol=2e-6)


def test_batch_norm_statistics_are_saved_and_loaded(tmp_path):
    manual_seed(0)
    model = models.cnn()
    x = Tensor(np.random.default_rng(6).standard_normal((8, 784)).astype(np.float32))
    for _ in range(2):
        model(x)
    state = model.state_dict()
    assert {"features.1.running_mean", "features.1.running_var",
            "features.5.running_mean", "features.5.running_var"} <= set(state)
    nn.save(model, tmp_path / "cnn.npz")
    manual_seed(1)
    other = models.cnn()
    nn.load(other, tmp_path / "cnn.npz")
    np.testing.assert_array_equal(other.features[1].running_var.data,
                                  model.features[1].running_var.data)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(other(x).data, model(x).data)


# ---------------------------------------------------------------- conv nets

def test_models_have_their_stated_sizes():
    assert sum(p.size for p in models.lenet5().parameters()) == 61_706
    assert sum(p.size for p in models.cnn().parameters()) == 857_930
    with no_grad():
        assert models.lenet5()(Tensor.zeros(3, 784)).shape == (3, 10)
        assert models.cnn().eval()(Tensor.zeros(3, 784)).shape == (3, 10)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    ds = data.load("mnist", str(mnist_dir), progress=False, splits=("test",))
    return ds.normalized(ds.test_images[:512]), ds.test_labels[:512].astype(np.int64)


@pytest.mark.slow
def test_lenet_learns(digits):
    x, y = digits
    manual_seed(0)
    model = models.lenet5()
    opt = optim.SGD(model.parameters(), 0.05, momentum=0.9)
    losses = []
    for epoch in range(6):
        for start in range(0, 512, 64):
            opt.zero_grad()
            loss = nn.cross_entropy(model(Tensor(x[start:start + 64])), y[start:start + 64])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[0] > 2.0 and np.mean(losses[-8:]) < 0.5 * losses[0]
    with no_grad():
        assert (model(Tensor(x)).data.argmax(1) == y).mean() > 0.8


def test_cnn_replay_equals_eager_step_by_step(digits):
    """Batch norm's running statistics, dropout's masks and the conv ops all replayed: the
    jitted steps and eager ones give the same parameters and buffers after every step."""
    x, y = digits

    def run(use_jit):
        manual_seed(0)
        model = models.cnn(channels=(4, 8), hidden=16, dropout=0.3)
        opt = optim.Adam(model.parameters(), 1e-3)

        def step(xb, yb):
            opt.zero_grad()
            loss = nn.cross_entropy(model(Tensor(xb)), yb)
            loss.backward()
            opt.step()
            return loss
        step = jit(step) if use_jit else step
        states = []
        for start in range(0, 192, 32):
            step(x[start:start + 32], y[start:start + 32])
            states.append({k: v.copy() for k, v in model.state_dict().items()})
        return states, step
    eager, _ = run(False)
    replayed, jitted = run(True)
    assert jitted.replays >= 4
    for i, (a, b) in enumerate(zip(eager, replayed)):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-7,
                                       err_msg=f"step {i}, {key}")


# ---------------------------------------------------------------- elastic distortions

def test_elastic_distortion_is_seeded_smooth_and_of_the_stated_size():
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (64, 28, 28)).astype(np.float32)
    a = data.augment(images, np.random.default_rng(1), 0, 0, elastic=34)
    b = data.augment(images, np.random.default_rng(1), 0, 0, elastic=34)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, images)
    np.testing.assert_allclose(data.augment(images, np.random.default_rng(1), 0, 0, elastic=0),
                               images, atol=1e-6)
    smooth = data.smoothing_matrix(4.0)
    np.testing.assert_allclose(smooth.sum(axis=1), 1, rtol=1e-6)
    # a constant image is not changed by any displacement that stays inside it
    flat = np.full((4, 28, 28), 0.5, np.float32)
    moved = data.augment(flat, np.random.default_rng(2), 0, 0, elastic=34)
    np.testing.assert_allclose(moved[:, 8:20, 8:20], 0.5, atol=1e-6)


def test_elastic_displacement_of_an_image_that_is_a_ramp():
    """On the image f(y, x) = x / 27 bilinear sampling is exact, so the output minus the input
    is the horizontal displacement field itself: smooth (neighbours close) and with the
    spread that alpha and sigma give."""
    ramp = np.tile(np.arange(28, dtype=np.float32) / 27, (256, 28, 1))
    moved = data.augment(ramp, np.random.default_rng(3), 0, 0, elastic=34)
    field = (moved - ramp)[:, 6:22, 6:22] * 27            # pixels, away from the border
    smooth = data.smoothing_matrix(4.0)
    draws = np.random.default_rng(0).uniform(-1, 1, (2000, 28, 28)).astype(np.float32)
    expected_std = (smooth @ draws @ smooth.T * 34)[:, 6:22, 6:22].std()
    assert field.std() == pytest.approx(expected_std, rel=0.1)
    jumps = np.abs(np.diff(field, axis=2)).mean()
    assert jumps < 0.2 * field.std()


# ---------------------------------------------------------------- the trainer's paths

@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory, mnist_dir):
    from tinygrad_mnist.mnist.options import Config
    from tinygrad_mnist.mnist.train import train
    out = tmp_path_factory.mktemp("lenet")
    config = Config(arch="lenet5", data_dir=str(mnist_dir), subset=3000, epochs=2,
                    dropout=0.0, out=str(out))
    return out, train(config, log=lambda *a: None, progress=False)


@pytest.mark.slow
def test_train_arch_lenet5_learns_and_saves_what_eval_and_predict_read(lenet_run, mnist_dir,
                                                                       tmp_path, capsys):
    from PIL import Image
    from tinygrad_mnist.mnist import cli
    out, metrics = lenet_run
    assert metrics["test_accuracy"] > 0.85 and metrics["config"]["arch"] == "lenet5"
    assert nn.load_meta(out / "model.npz")["arch"] == "lenet5"
    assert cli.main(["eval", "--model", str(out / "model.npz"), "--data-dir", str(mnist_dir),
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"test accuracy: {_saved_model_accuracy(out, mnist_dir) * 100:.2f}%" in printed
    ds = data.load("mnist", str(mnist_dir), progress=False, splits=("test",))
    seven = tmp_path / "seven.png"
    Image.fromarray(ds.test_images[0]).save(seven)
    assert cli.main(["predict", "--model", str(out / "model.npz"), str(seven)]) == 0
    assert capsys.readouterr().out.startswith(f"{seven}: 7 ")


def _saved_model_accuracy(out, mnist_dir):
    """A saved conv net's accuracy on all 10,000 test images, computed here directly."""
    meta = nn.load_meta(out / "model.npz")
    model = models.build(meta["arch"], meta["hidden"], meta["activation"],
                         meta.get("dropout", 0.0), cnn_kernel=meta.get("cnn_kernel", 5))
    nn.load(model, out / "model.npz")
    model.eval()
    ds = data.load("mnist", str(mnist_dir), progress=False, splits=("test",))
    with no_grad():
        logits = np.concatenate([model(Tensor(ds.normalized(ds.test_images[i:i + 2000]))).data
                                 for i in range(0, 10000, 2000)])
    return (logits.argmax(1) == ds.test_labels).mean()


@pytest.mark.slow
def test_train_profile_of_a_conv_net_shows_its_ops(tmp_path, mnist_dir, capsys):
    from tinygrad_mnist.mnist import cli
    assert cli.main(["train", "--arch", "cnn", "--data-dir", str(mnist_dir), "--subset", "256",
                     "--epochs", "1", "--quiet", "--profile", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out.split("profile of the training steps", 1)[1]
    for row in ("conv2d", "batch_norm", "max_pool2d", "linear", "cross_entropy"):
        assert row in table, row
    assert "2 steps:" in table                                    # 256 images / 128


@pytest.mark.slow
def test_a_3x3_cnn_trains_and_eval_rebuilds_it(tmp_path, mnist_dir, capsys):
    from tinygrad_mnist.mnist import cli
    model = models.cnn(kernel=3)
    sizes = {name: p.shape for name, p in model.named_parameters()}
    assert sum(p.size for p in model.parameters()) == (
        32 * 9 + 32 + 2 * 32 + 64 * 32 * 9 + 64 + 2 * 64 + 3136 * 256 + 256 + 2570)
    assert (32, 1, 3, 3) in sizes.values() and (64, 32, 3, 3) in sizes.values()
    assert cli.main(["train", "--arch", "cnn", "--cnn-kernel", "3", "--data-dir",
                     str(mnist_dir), "--subset", "512", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert nn.load_meta(tmp_path / "model.npz")["cnn_kernel"] == 3
    assert cli.main(["eval", "--model", str(tmp_path / "model.npz"), "--data-dir",
                     str(mnist_dir), "--quiet"]) == 0
    expected = _saved_model_accuracy(tmp_path, mnist_dir)
    assert f"test accuracy: {expected * 100:.2f}%" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--cnn-kernel is an option of --arch cnn"):
        models.build("lenet5", cnn_kernel=3)


@pytest.mark.parametrize("stored", [{}, {"dropout": 0.3}])
def test_eval_reads_a_conv_net_trained_with_dropout(stored, tmp_path):
    """A conv net's layer names depend on whether it has dropout: eval rebuilds it from the
    stored dropout, or, for a model saved before the dropout was stored, from its layout."""
    from tinygrad_mnist.mnist import cli
    model = models.cnn(dropout=0.3)
    path = tmp_path / "model.npz"
    nn.save(model, path, meta={"arch": "cnn", "hidden": [512, 256], "activation": "relu",
                               **stored})
    loaded, _ = cli.load_model(path)
    x = Tensor(np.random.default_rng(8).standard_normal((4, 784)).astype(np.float32))
    np.testing.assert_allclose(loaded(x).data, model.eval()(x).data, rtol=1e-6)


@pytest.mark.slow
def test_sweep_over_architectures(tmp_path, mnist_dir):
    from tinygrad_mnist.mnist import cli
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--data-dir", str(mnist_dir), "--subset", "300", "--epochs", "1",
                     "--arch", "mlp,lenet5", "--hidden", "16", "--quiet",
                     "--out", str(out)]) == 0
    import json
    saved = json.loads((out / "results.json").read_text())["trials"]
    assert sorted(t["options"]["arch"] for t in saved) == ["lenet5", "mlp"]
    assert "lenet5" in (out / "results.md").read_text()
    for trial in saved:
        meta = nn.load_meta(out / "trials" / trial["key"] / "model.npz")
        assert meta["arch"] == trial["options"]["arch"]


def test_memory_check_counts_a_conv_nets_activations():
    from tinygrad_mnist.mnist.memory import memory_needed
    from tinygrad_mnist.mnist.options import Config
    model, batch, _ = memory_needed(Config(arch="cnn", batch_size=128), 60000)
    assert model == 4 * 857_930 * 5                 # Adam, the conv nets' default: 5 copies
    # the cnn's first block alone keeps 32 x 28 x 28 floats per image several times over
    assert batch > 128 * 4 * 32 * 28 * 28 * 4
    with pytest.raises(ValueError, match="--arch cnn with --batch-size 100000000"):
        from tinygrad_mnist.mnist.memory import check_memory
        check_memory(Config(arch="cnn", batch_size=100_000_000), 60000)


@pytest.mark.parametrize("arch", ["lenet5", "cnn"])
def test_an_empty_batch_goes_through_a_conv_net_and_its_gradients_are_zeros(arch):
    """conv2d, pooling and batch norm (eval) on a batch of 0, forward and backward, as
    PyTorch: empty outputs, and zero gradients for the weights."""
    from tinygrad_mnist.mnist.models import build
    manual_seed(0)
    model = build(arch, dropout=0.0).eval()
    x = Tensor(np.zeros((0, 784), np.float32), requires_grad=True)
    logits = model(x)
    assert logits.shape == (0, 10)
    (logits * 1.0).sum().backward()
    assert x.grad.shape == (0, 784)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any(), name


def test_batch_norm_refuses_to_train_on_an_empty_batch():
    with pytest.raises(ValueError, match=r"BatchNorm2d: training needs more than one value per "
                                         r"channel, got input of shape \(0, 3, 4, 4\)"):
        nn.BatchNorm2d(3)(Tensor(np.zeros((0, 3, 4, 4), np.float32)))


@pytest.mark.parametrize("algorithm", ["fourier", "winograd", "shifted"])
def test_conv2d_differentiates_the_same_whichever_algorithm_is_pinned(monkeypatch, algorithm):
    """Conv2d's backward takes what the forward kept (the Fourier spectrum, or nothing) and
    its jvp ignores it: gradients against finite differences, tangents against im2col's."""
    from tinygrad_mnist import func
    from tinygrad_mnist.engine.kernels import convolution as kconv
    rng = np.random.default_rng(11)
    x = Tensor(rng.normal(size=(2, 3, 6, 5)), requires_grad=True, dtype=np.float64)
    w = Tensor(rng.normal(size=(4, 3, 3, 3)), requires_grad=True, dtype=np.float64)
    b = Tensor(rng.normal(size=4), requires_grad=True, dtype=np.float64)
    weights = rng.normal(size=(2, 4, 6, 5))
    tx = Tensor(rng.normal(size=x.shape), dtype=np.float64)
    tw = Tensor(rng.normal(size=w.shape), dtype=np.float64)

    def f(x, w, b):
        return (x.conv2d(w, b, padding=1) * weights).sum()
    monkeypatch.setattr(kconv, "PINNED", "col2im")
    _, expected = func.jvp(lambda x, w: x.conv2d(w, padding=1), (x, w), (tx, tw))
    monkeypatch.setattr(kconv, "PINNED_FORWARD", algorithm)
    monkeypatch.setattr(kconv, "PINNED", "fourier")
    assert gradcheck(f, [x, w, b])
    _, tangent = func.jvp(lambda x, w: x.conv2d(w, padding=1), (x, w), (tx, tw))
    np.testing.assert_allclose(tangent.numpy(), expected.numpy(), rtol=1e-10, atol=1e-10)
