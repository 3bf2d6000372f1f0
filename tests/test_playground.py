"""The playground page in a real headless browser: for 20 test digits, the probabilities, every
layer's output and the input gradient it computes equal Python's (the model and func.grad on
the same 28x28 input) to 1e-5; strokes drawn with pointer events are preprocessed as
`predict` does; it works from a file:// URL with no request and no script error."""
import pathlib

import numpy as np
import pytest

from tinygrad_mnist import Tensor, func
from tinygrad_mnist.mnist import data
from tinygrad_mnist.mnist.cli import load_model
from tinygrad_mnist.mnist.cli import main as cli
from tinygrad_mnist.mnist.images import to_mnist_layout
from tinygrad_mnist.mnist.models import build
from tinygrad_mnist.tracing import forward_ops
from tinygrad_mnist.viz.playground import layers_of

from browser import open_page, require_browser, requests_and_errors, start_browser

pytestmark = pytest.mark.slow        # drives a headless browser (pytest -m "not slow" skips it)
require_browser()
from browser import ActionChains, By  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    driver = start_browser("1400,1300")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory, mnist_dir):
    """arch -> (page, model, dataset info): an MLP (the default sizes) and LeNet-5, trained
    briefly by the CLI, and their pages written by the CLI."""
    root = tmp_path_factory.mktemp("playground")
    out = {}
    for arch, subset in (("mlp", "6000"), ("lenet5", "3000")):
        run = root / arch
        assert cli(["train", "--data-dir", str(mnist_dir), "--out", str(run), "--arch", arch,
                    "--epochs", "1", "--subset", subset, "--quiet"]) == 0
        assert cli(["playground", "--model", str(run / "model.npz"), "--data-dir",
                    str(mnist_dir), "--quiet"]) == 0
        model, meta = load_model(run / "model.npz")
        out[arch] = run / "playground.html", model, data.DATASETS["mnist"]
    return out


def python_answer(model, info, pixels):
    """What the page must show for a 28x28 image of pixels in [0, 1]: every layer's output, the
    probabilities, and the gradient of the chosen class's logit with respect to the pixels."""
    x = Tensor(((pixels.reshape(1, 784) - np.float32(info.mean)) / np.float32(info.std))
               .astype(np.float32))
    steps, logits = forward_ops(model, x)
    z = logits.numpy()[0]
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    answer = int(probs.argmax())

    def score(p):
        return model((p.reshape(1, 784) - np.float32(info.mean)) / np.float32(info.std))[0, answer]
    model.eval()
    gradient = func.grad(score)(Tensor(pixels.astype(np.float32))).numpy()
    return [out.numpy()[0] for _, _, out in steps], probs, answer, gradient


def assert_close(shown, expected, what):
    shown, expected = np.asarray(shown, np.float64).ravel(), np.asarray(expected).ravel()
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(shown - expected).max() <= 1e-5 * scale, what


def check_result(result, model, info, pixels):
    outputs, probs, answer, gradient = python_answer(model, info, pixels)
    assert result["answer"] == answer
    assert_close(result["probs"], probs, "probabilities")
    assert len(result["outputs"]) == len(outputs)
    for k, (shown, expected) in enumerate(zip(result["outputs"], outputs)):
        assert_close(shown["data"], expected, f"layer {k + 1}")
    assert_close(result["back"]["input"], gradient, "input gradient")


READ = """const r = window.playground.loadDigit(arguments[0]);
return {answer: r.answer, probs: r.probs, back: {input: r.back.input},
        outputs: r.outputs.map(o => ({data: Array.from(o.data)}))};"""


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_twenty_test_digits_give_pythons_numbers(arch, pages, browser):
    page, model, info = pages[arch]
    open_page(browser, page)
    digits = browser.execute_script(
        "return window.playground.state && (DATA.digits.map(d => [d.label, d.answer]))")
    assert len(digits) >= 20 and any(label != answer for label, answer in digits)
    for k in range(20):
        result = browser.execute_script(READ, k)
        pixels = np.asarray(browser.execute_script(
            "return window.playground.digitPixels(DATA.digits[arguments[0]])", k), np.float32)
        check_result(result, model, info, pixels)
        assert result["answer"] == digits[k][1]           # the answer Python gave the page
    urls, errors = requests_and_errors(browser)
    assert errors == []
    assert all(u.startswith(("file:", "data:", "about:")) for u in urls), urls


@pytest.mark.parametrize("arch", ["cnn", "dpcnn"])
def test_conv_nets_with_batch_norm_and_strides_give_pythons_numbers(arch, browser, tmp_path,
                                                                   mnist_dir):
    """The CNN (batch norm folded into a scale and shift per channel) and the DP CNN (8x8
    stride-2 convolutions, stride-1 pooling, tanh), untrained, on three test digits."""
    from tinygrad_mnist import manual_seed, nn as tnn
    from tinygrad_mnist.viz.playground import playground
    manual_seed(1)
    model = build(arch, activation="tanh" if arch == "dpcnn" else "relu").eval()
    rng = np.random.default_rng(0)
    for layer in model.modules():
        if isinstance(layer, tnn.BatchNorm2d):          # statistics of its own
            layer.running_mean.data[:] = rng.normal(0, 0.3, layer.num_features)
            layer.running_var.data[:] = rng.uniform(0.5, 2, layer.num_features)
            layer.weight.data[:] = rng.uniform(0.5, 1.5, layer.num_features)
    ds = data.load("mnist", mnist_dir, progress=False, splits=("test",))
    digits = [(i, ds.test_images[i], int(ds.test_labels[i]), 0) for i in range(3)]
    page = playground(model, ds.info, tmp_path / f"{arch}.html", digits=digits)
    open_page(browser, pathlib.Path(page))
    for k in range(3):
        result = browser.execute_script(READ, k)
        check_result(result, model, ds.info, ds.test_images[k].astype(np.float32) / 255)
    assert requests_and_errors(browser)[1] == []


def test_strokes_drawn_with_the_pointer_are_seen_as_predict_sees_them(pages, browser):
    page, model, info = pages["lenet5"]
    open_page(browser, page)
    assert browser.execute_script("return window.playground.state.result") is None   # blank
    pad = browser.find_element(By.ID, "pad")
    strokes = ActionChains(browser).move_to_element_with_offset(pad, -60, -90).click_and_hold()
    for _ in range(10):
        strokes.move_by_offset(13, 0)                     # a 7: the bar, then the stem
    for _ in range(12):
        strokes.move_by_offset(-5, 15)
    strokes.release().perform()
    result = browser.execute_script(
        "const r = window.playground.state.result; return r && {pixels: r.pixels, "
        "answer: r.answer, probs: r.probs, back: {input: r.back.input}, "
        "outputs: r.outputs.map(o => ({data: Array.from(o.data)}))};")
    assert result is not None
    height, width = browser.execute_script("return window.playground.size")
    raw = np.asarray(browser.execute_script(
        "return Array.from(window.playground.rawPixels())"), np.float32).reshape(height, width)
    assert raw.max() == 1.0 and raw[0].max() == 0.0                  # ink, on a clean border
    expected = to_mnist_layout(raw)
    pixels = np.asarray(result["pixels"], np.float32).reshape(28, 28)
    assert np.abs(pixels - expected).max() <= 1e-6
    check_result(result, model, info, pixels)
    assert result["answer"] == 7
    browser.find_element(By.ID, "clear").click()
    assert browser.execute_script("return window.playground.state.result") is None
    urls, errors = requests_and_errors(browser)
    assert errors == [] and all(u.startswith(("file:", "data:", "about:")) for u in urls)


def test_the_backward_stepper_walks_from_the_logits_to_the_pixels(pages, browser):
    page, model, info = pages["lenet5"]
    open_page(browser, page)
    browser.execute_script("window.playground.loadDigit(0)")
    layers = len(browser.execute_script("return window.playground.layers"))
    label = browser.find_element(By.ID, "step-label")
    title = browser.find_element(By.CSS_SELECTOR, "#step-panel .title")
    assert label.text == f"step 0 of {layers}" and "output of layer 13" in title.text
    for _ in range(layers + 2):                           # past the end stays at the end
        browser.find_element(By.ID, "next").click()
    assert label.text == f"step {layers} of {layers}"
    assert "pixels" in browser.find_element(By.CSS_SELECTOR, "#step-panel .title").text
    browser.find_element(By.ID, "prev").click()
    assert "layer 1 (reshape" in browser.find_element(By.CSS_SELECTOR, "#step-panel .title").text


def test_models_the_page_cannot_compute_are_refused_by_name():
    with pytest.raises(ValueError, match="transpose, which the page does not compute"):
        layers_of(build("lstm"))
