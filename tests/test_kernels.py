"""Every fast path of the kernels against the plain formula: each strategy, layout and chunk
size, over the op table's shapes and shapes that reach every branch (one input channel, more
than OFFSET_MAJOR_CHANNELS, groups, stride, dilation, padding, chunks of one image)."""
import math

import numpy as np
import pytest

from tinygrad_mnist import ops
from tinygrad_mnist.engine import Tensor
from tinygrad_mnist.engine.kernels import (batchnorm, blas, conv_algorithms,
                                          convolution as kconv, fourier, pooling, special)
from tinygrad_mnist.engine.kernels.windows import Geometry

rng = np.random.default_rng(0)
LIMIT = kconv.OFFSET_MAJOR_CHANNELS

# (input shape, weight shape, kernel, stride, padding, dilation, groups)
CONVS = [
    ((2, 3, 5, 6), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),           # the op table's
    ((1, 2, 7, 6), (3, 2, 3, 2), (2, 2), (1, 1), (1, 1), 1),
    ((2, 2, 7, 7), (2, 2, 2, 3), (2, 1), (0, 2), (2, 2), 1),
    ((1, 4, 5, 5), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((1, 3, 4, 5), (3, 1, 2, 2), (2, 2), (0, 0), (1, 1), 3),
    ((2, 1, 6, 6), (2, 1, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    ((3, 1, 9, 9), (6, 1, 5, 5), (1, 1), (0, 0), (1, 1), 1),           # LeNet's conv1: one channel
    ((3, 6, 8, 8), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1),          # LeNet's conv2: few channels
    ((2, LIMIT + 4, 7, 7), (LIMIT + 2, LIMIT + 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # many
    ((2, LIMIT + 1, 6, 6), (LIMIT + 8, LIMIT + 1, 5, 5), (1, 1), (2, 2), (1, 1), 1),  # more out
    ((2, LIMIT + 2, 7, 6), (4, LIMIT + 2, 3, 3), (2, 2), (1, 1), (1, 1), 1),          # stride
    ((2, 8, 6, 6), (8, 2, 3, 3), (1, 1), (1, 1), (1, 1), 4),           # groups, stride 1
    ((3, 1, 5, 7), (2, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),           # 3x3, one channel
    ((2, 3, 8, 7), (4, 3, 3, 2), (1, 1), (1, 2), (2, 1), 1),           # dilated, stride 1
    ((2, 2, 7, 8), (3, 2, 2, 3), (1, 1), (1, 1), (1, 2), 1),           # ... along the width
    ((0, 3, 5, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),           # an empty batch
    ((0, 1, 6, 6), (2, 1, 3, 3), (2, 2), (0, 0), (1, 1), 1),
    ((0, 4, 5, 5), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2),
]


def _case(case, dtype=np.float64):
    xs, ws, stride, padding, dilation, groups = case
    geometry = Geometry(ws[2:], stride, padding, dilation, groups)
    x, w = rng.normal(size=xs).astype(dtype), rng.normal(size=ws).astype(dtype)
    out_hw = geometry.output_size("test", *xs[2:])
    g = rng.normal(size=(xs[0], ws[0]) + out_hw).astype(dtype)
    return x, w, g, geometry


def _channels_last(a):
    """The same values with channels-last memory, as conv2d returns them."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _methods(geometry, input_shape, weight_shape):
    out = ["col2im"]
    (kh, kw), (ph, pw), (dh, dw) = geometry.kernel, geometry.padding, geometry.dilation
    if geometry.stride == (1, 1) and min(dh * (kh - 1) - ph, dw * (kw - 1) - pw) >= 0:
        out.append("turned")
    if geometry.groups == 1:
        out.append("col2im_offset_major")
    return out


@pytest.mark.parametrize("case", CONVS, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels last"])
def test_conv_forward_equals_the_definition(case, layout):
    x, w, _, geometry = _case(case)
    x = _channels_last(x) if layout == "channels last" else x
    out, cols = kconv.conv(x, w, geometry)
    np.testing.assert_allclose(out, kconv.reference_conv(x, w, geometry), rtol=1e-10,
                               atol=1e-10)
    assert cols.offset_major == (x.shape[1] == 1)


@pytest.mark.parametrize("case", CONVS, ids=str)
def test_every_input_gradient_strategy_and_chunking_equals_the_definition(case):
    x, w, g, geometry = _case(case)
    expected = kconv.reference_input_grad(g, w, geometry, x.shape)
    per_image = int(np.prod(g.shape[2:])) * int(np.prod(w.shape[1:])) * geometry.groups * 8
    methods = _methods(geometry, x.shape, w.shape)
    assert kconv.input_grad_method(geometry, x.shape, w.shape) in methods
    for method in methods:
        for chunk_bytes in (kconv.COL2IM_BYTES, per_image, 1):     # whole batch, 1 image each
            got = kconv.input_grad(g, w, geometry, x.shape, method=method,
                                   chunk_bytes=chunk_bytes)
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10,
                                       err_msg=f"{method}, chunks of {chunk_bytes} bytes")


def test_the_chosen_strategies_cover_every_branch():
    chosen = {kconv.input_grad_method(Geometry(ws[2:], s, p, d, gr), xs, ws)
              for xs, ws, s, p, d, gr in CONVS}
    assert chosen == {"turned", "col2im", "col2im_offset_major"}


def test_a_strategy_that_does_not_apply_is_an_error_naming_it():
    x, w, g, geometry = _case(CONVS[1])                       # stride 2
    with pytest.raises(ValueError, match="turned convolution needs stride 1"):
        kconv.input_grad(g, w, geometry, x.shape, method="turned")
    x, w, g, geometry = _case(CONVS[3])                       # groups 2
    with pytest.raises(ValueError, match="offset-major col2im needs groups=1"):
        kconv.input_grad(g, w, geometry, x.shape, method="col2im_offset_major")


@pytest.mark.parametrize("case", CONVS, ids=str)
def test_weight_gradient_from_its_own_columns_and_the_forwards_equals_the_definition(case):
    x, w, g, geometry = _case(case)
    expected = kconv.reference_weight_grad(x, g, geometry, w.shape)
    np.testing.assert_allclose(kconv.weight_grad(x, g, geometry, w.shape), expected,
                               rtol=1e-10, atol=1e-10)
    _, cols = kconv.conv(x, w, geometry)                     # as Conv2d's backward reuses them
    np.testing.assert_allclose(kconv.weight_grad(x, g, geometry, w.shape, cols), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [c for c in CONVS if c[0][1] > 1 and c[5] == 1], ids=str)
@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_im2col_chunk_by_chunk_equals_the_definition(case, chunk):
    """Large columns are made and multiplied a few images at a time (forward), and made again
    the same way for the weight gradient: chunks of one image, of two (the last one short)
    and of more images than the batch has."""
    x, w, g, geometry = _case(case)
    out, cols = kconv.conv(_channels_last(x), w, geometry, chunk=chunk)
    assert cols is None
    np.testing.assert_allclose(out, kconv.reference_conv(x, w, geometry), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(kconv.weight_grad(x, g, geometry, w.shape, chunk=chunk),
                               kconv.reference_weight_grad(x, g, geometry, w.shape),
                               rtol=1e-10, atol=1e-10)


def test_a_large_input_gradient_measures_its_strategies_once_and_a_pinned_one_wins(
        monkeypatch):
    x, w, g, geometry = _case(CONVS[7])                        # LeNet's conv2: four apply
    expected = kconv.reference_input_grad(g, w, geometry, x.shape)
    monkeypatch.setattr(kconv, "CHOSEN", {})
    monkeypatch.setattr(kconv, "MEASURED_MACS", 0)                # measure even this one
    np.testing.assert_allclose(kconv.input_grad(g, w, geometry, x.shape), expected,
                               rtol=1e-10, atol=1e-10)
    chosen = {k: v for k, v in kconv.CHOSEN.items() if k[4] == kconv.INPUT_GRAD}
    (method, how), = chosen.values()
    assert how == "measured" and method in kconv.input_grad_methods(geometry, w.shape, x.shape)
    np.testing.assert_allclose(kconv.input_grad(g, w, geometry, x.shape), expected,
                               rtol=1e-10, atol=1e-10)       # now from the cache
    described = [line for line in kconv.describe_choices() if "input gradient" in line]
    assert len(described) == 1 and method in described[0]
    calls = []
    monkeypatch.setattr(kconv, "_col2im", lambda *a: calls.append(a) or expected)
    monkeypatch.setattr(kconv, "PINNED", "col2im")
    kconv.input_grad(g, w, geometry, x.shape)
    assert len(calls) == 1                                       # the pinned one ran, alone


def test_measured_strategies_survive_a_checkpoint_as_json(monkeypatch):
    """A resumed run computes with the strategies the crashed one measured (the sums must be
    the same to continue exactly); rule-picked ones are picked again by the rule."""
    import json
    monkeypatch.setattr(kconv, "CHOSEN", {})
    measured = (Geometry((5, 5), (1, 1), (2, 2)).key(), (128, 32, 14, 14), (64, 32, 5, 5), "<f4",
                kconv.INPUT_GRAD)
    forward = (Geometry((3, 3), (1, 1), (1, 1)).key(), (128, 32, 14, 14), (64, 32, 3, 3), "<f4",
               kconv.FORWARD)
    kconv.CHOSEN[measured] = ("turned", "measured")
    kconv.CHOSEN[forward] = ("winograd", "measured")
    kconv.CHOSEN[(Geometry((3, 3), (2, 2), (1, 1)).key(), (1, 2, 5, 5), (2, 2, 3, 3), "<f8",
                  kconv.INPUT_GRAD)] = ("col2im", "rule")
    saved = json.loads(json.dumps(kconv.saved_choices()))
    monkeypatch.setattr(kconv, "CHOSEN", {})
    kconv.restore_choices(saved)
    assert kconv.CHOSEN == {measured: ("turned", "measured"), forward: ("winograd", "measured")}
    monkeypatch.setattr(kconv, "CHOSEN", {})               # a checkpoint from before the kind
    kconv.restore_choices([entry[:5] for entry in saved if entry[5] == kconv.INPUT_GRAD])
    assert kconv.CHOSEN == {measured: ("turned", "measured")}


@pytest.mark.parametrize("case", CONVS, ids=str)
@pytest.mark.parametrize("method", ["winograd", "shifted"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_forward_algorithm_equals_the_definition_where_it_applies(case, method, dtype):
    """Winograd F(2x2, 3x3) and the shifted views, on every table shape they apply to (odd
    and even outputs, padding, one channel, dilation, an empty batch; Winograd in chunks of
    2 images too); float32 within its rounding of the float64 definition."""
    x, w, _, geometry = _case(case, dtype)
    if method not in kconv.forward_methods(geometry, x.shape):
        with pytest.raises(ValueError, match=f"the {method} algorithm does not apply"):
            kconv.conv(x, w, geometry, method=method)
        return
    out, cols = kconv.conv(_channels_last(x), w, geometry, method=method)
    results = [out]
    if method == "winograd":
        results.append(conv_algorithms.winograd_conv(x, w, geometry, chunk=2))
    expected = kconv.reference_conv(x.astype(np.float64), w.astype(np.float64), geometry)
    scale = max(1.0, np.abs(expected).max(initial=0))
    tolerance = 1e-10 if dtype == np.float64 else 2e-5 * scale
    assert cols is None
    for out in results:
        assert out.shape == expected.shape and out.dtype == dtype
        np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance)


def test_every_forward_algorithm_is_checked_on_some_table_shape():
    for method in ("winograd", "shifted"):
        assert any(method in kconv.forward_methods(_case(case)[3], case[0]) for case in CONVS)


def test_the_forward_algorithm_is_measured_once_per_shape_and_a_pinned_one_wins(monkeypatch):
    x, w, _, geometry = _case(((4, 3, 6, 6), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1))
    expected = kconv.reference_conv(x, w, geometry)
    monkeypatch.setattr(kconv, "CHOSEN", {})
    monkeypatch.setattr(kconv, "MEASURED_MACS", 0)
    timed = []
    real = kconv.winograd_conv
    monkeypatch.setattr(kconv, "winograd_conv", lambda *a: timed.append(1) or real(*a))
    np.testing.assert_allclose(kconv.conv(x, w, geometry)[0], expected, rtol=1e-10, atol=1e-10)
    (key, (method, how)), = kconv.CHOSEN.items()
    assert key[4] == kconv.FORWARD and how == "measured" and len(timed) == 2
    assert method in kconv.forward_methods(geometry, x.shape)
    np.testing.assert_allclose(kconv.conv(x, w, geometry)[0], expected, rtol=1e-10, atol=1e-10)
    assert len(timed) == 2 + (method == "winograd")            # the cached choice, once
    monkeypatch.setattr(kconv, "PINNED_FORWARD", "winograd")
    kconv.conv(x, w, geometry)
    assert len(timed) == 3 + (method == "winograd")            # the pinned one ran, alone
    monkeypatch.setattr(kconv, "MEASURED_MACS", 10 ** 12)      # small products: im2col
    monkeypatch.setattr(kconv, "PINNED_FORWARD", None)
    monkeypatch.setattr(kconv, "CHOSEN", {})
    kconv.conv(x, w, geometry)
    assert list(kconv.CHOSEN.values()) == [("im2col", "rule")]


def test_an_unknown_forward_algorithm_is_refused_by_name():
    x, w, _, geometry = _case(CONVS[0])
    with pytest.raises(ValueError, match="unknown algorithm 'fft'"):
        kconv.conv(x, w, geometry, method="fft")


@pytest.mark.parametrize("case", [c for c in CONVS if fourier.fourier_applies(
    Geometry(c[1][2:], c[2], c[3], c[4], c[5]), c[0])], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fourier_algorithm_equals_the_definition_in_all_three_maps(case, dtype):
    """Forward, input gradient and weight gradient (from the forward's spectrum and without
    it): float64 to rounding, float32 within its rounding of the float64 definition."""
    x, w, g, geometry = _case(case, dtype)
    x = _channels_last(x)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    out, spectrum = kconv.conv(x, w, geometry, method="fourier")
    gx = kconv.input_grad(g, w, geometry, x.shape, method="fourier")
    expected = [kconv.reference_conv(x64, w64, geometry),
                kconv.reference_input_grad(g64, w64, geometry, x.shape),
                kconv.reference_weight_grad(x64, g64, geometry, w.shape),
                kconv.reference_weight_grad(x64, g64, geometry, w.shape)]
    got = [out, gx, kconv.weight_grad(x, g, geometry, w.shape, spectrum),
           fourier.fourier_weight_grad(x, g, geometry, w.shape)]
    for a, e in zip(got, expected):
        scale = max(1.0, np.abs(e).max(initial=0))
        tolerance = 1e-10 * scale if dtype == np.float64 else 2e-5 * scale
        assert a.shape == e.shape and a.dtype == dtype
        np.testing.assert_allclose(a, e, rtol=0, atol=tolerance)
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous          # channels last, as im2col's


def test_fourier_results_never_share_the_reused_work_arrays():
    """The transforms' intermediates are reused from call to call; what a call returns (and
    the spectrum the forward keeps) must not change when the next call runs."""
    x, w, g, geometry = _case(CONVS[7])
    out, spectrum = kconv.conv(x, w, geometry, method="fourier")
    gx = kconv.input_grad(g, w, geometry, x.shape, method="fourier")
    kept = [out.copy(), spectrum.x.copy(), gx.copy()]
    kconv.conv(x * 2 + 1, w - 1, geometry, method="fourier")
    kconv.input_grad(g * 3, w + 1, geometry, x.shape, method="fourier")
    kconv.weight_grad(x - 1, g * 2, geometry, w.shape, spectrum)
    for a, b in zip([out, spectrum.x, gx], kept):
        np.testing.assert_array_equal(a, b)


def test_the_fourier_algorithm_applies_to_stride_one_small_images_only():
    x, w, g, geometry = _case(next(c for c in CONVS if c[2] == (2, 2) and c[0][0]))
    assert not fourier.fourier_applies(geometry, x.shape)
    with pytest.raises(ValueError, match="the fourier algorithm does not apply"):
        kconv.conv(x, w, geometry, method="fourier")
    with pytest.raises(ValueError, match="the Fourier algorithm needs stride 1"):
        kconv.input_grad(g, w, geometry, x.shape, method="fourier")
    assert not fourier.fourier_applies(Geometry((3, 3), (1, 1), (1, 1)), (1, 1, 300, 300))
    assert "fourier" in kconv.forward_methods(Geometry((5, 5), (1, 1), (2, 2)), (8, 32, 14, 14))
    # worth measuring where its multiply-adds are near the direct sum's, never on one channel
    same = Geometry((5, 5), (1, 1), (2, 2))
    assert "fourier" in kconv.forward_methods(same, (128, 32, 14, 14), (64, 32, 5, 5))
    assert "fourier" in kconv.input_grad_methods(same, (64, 32, 5, 5), (128, 32, 14, 14))
    assert "fourier" not in kconv.forward_methods(same, (128, 1, 28, 28), (32, 1, 5, 5))
    assert "fourier" not in kconv.input_grad_methods(same, (32, 1, 5, 5), (128, 1, 28, 28))


def test_fourier_work_arrays_are_kept_per_name_and_shape_and_the_oldest_shape_dropped():
    p = fourier.plan(5, 6, (1, 1), (3, 3), np.dtype(np.float32).str)
    a = p.scratch("test", (2, 3))
    assert p.scratch("test", (2, 3)) is a and a.dtype == np.float32
    assert p.scratch("other", (2, 3)) is not a
    for rows in range(3, 3 + fourier.SCRATCH_SHAPES):              # more shapes than kept
        p.scratch("test", (rows, 3))
    assert p.scratch("test", (2, 3)) is not a


def test_the_weight_gradient_takes_the_input_gradients_spectrum_of_dy_and_only_it(
        monkeypatch):
    """A backward transforms dy once for both gradients; timing the input gradient twice on
    one dy (a measurement) transforms it twice, or the second try would look free."""
    x, w, g, geometry = _case(CONVS[7])
    _, spectrum = kconv.conv(x, w, geometry, method="fourier")
    transforms = []
    real = fourier._spectrum
    monkeypatch.setattr(fourier, "_spectrum", lambda *a: transforms.append(1) or real(*a))
    for _ in range(2):
        kconv.input_grad(g, w, geometry, x.shape, method="fourier")
    assert len(transforms) == 2
    gw = kconv.weight_grad(x, g, geometry, w.shape, spectrum)
    assert len(transforms) == 2
    np.testing.assert_allclose(gw, kconv.reference_weight_grad(x, g, geometry, w.shape),
                               rtol=1e-10, atol=1e-10)
    kconv.weight_grad(x, g, geometry, w.shape, spectrum)      # taken once: now computed
    assert len(transforms) == 3


def test_the_columns_go_chunk_by_chunk_only_when_large():
    geometry = Geometry((5, 5), (1, 1), (2, 2))
    assert kconv.chunk_images((128, 32, 14, 14), geometry, (14, 14)) == 13   # 80 MB of columns
    assert kconv.chunk_images((8, 32, 14, 14), geometry, (14, 14)) is None     # 5 MB
    assert kconv.chunk_images((128, 1, 28, 28), geometry, (28, 28)) is None    # one channel


@pytest.mark.parametrize("layout", ["nchw", "channels last"])
def test_bias_added_and_summed_per_channel_on_either_layout(layout):
    out = rng.normal(size=(3, 5, 4, 6))
    out = _channels_last(out) if layout == "channels last" else out.copy()
    bias = rng.normal(size=5)
    expected = out + bias.reshape(1, -1, 1, 1)
    kconv.add_channel_bias(out, bias)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_allclose(kconv.channel_sums(out), out.sum(axis=(0, 2, 3)), rtol=1e-10)


def test_column_sums_are_sums_over_rows():
    rows = rng.normal(size=(1000, 7))
    np.testing.assert_allclose(blas.column_sums(rows), rows.sum(axis=0), rtol=1e-10)


# ---------------------------------------------------------------- pooling

# (input shape, kernel, stride, padding)
POOLS = [((2, 3, 6, 6), (2, 2), (2, 2), (0, 0)), ((2, 3, 7, 5), (2, 2), (2, 2), (0, 0)),
         ((1, 2, 7, 5), (3, 3), (2, 2), (1, 1)),
         ((1, 2, 5, 6), (2, 3), (1, 2), (0, 0)), ((2, 5, 5, 5), (2, 2), (1, 1), (0, 0)),
         ((2, 4, 9, 9), (3, 3), (3, 3), (1, 1))]


@pytest.mark.parametrize("case", POOLS, ids=str)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_picks_the_first_largest_and_its_gradient_goes_there(case, ties):
    shape, kernel, stride, padding = case
    geometry = Geometry(kernel, stride, padding)
    x = rng.normal(size=shape)
    if ties:
        x = np.round(x)                                     # many equal maxima
    x = _channels_last(x)
    out, choice = pooling.max_pool(x, geometry)
    ref_out, ref_choice = pooling.reference_max_pool(x, geometry)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(choice, ref_choice)
    g = rng.normal(size=out.shape)
    np.testing.assert_allclose(pooling.window_scatter(g, choice, geometry, shape),
                               pooling.reference_window_scatter(g, ref_choice, geometry, shape),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(pooling.window_gather(x, choice, geometry),
                                  pooling.reference_window_gather(x, ref_choice, geometry))


@pytest.mark.parametrize("case", POOLS, ids=str)
def test_average_pool_and_its_gradient_equal_the_definition(case):
    shape, kernel, stride, padding = case
    geometry = Geometry(kernel, stride, padding)
    x = _channels_last(rng.normal(size=shape))
    out = pooling.avg_pool(x, geometry)
    np.testing.assert_allclose(out, pooling.reference_avg_pool(x, geometry), rtol=1e-12)
    g = rng.normal(size=out.shape)
    np.testing.assert_allclose(pooling.avg_pool_scatter(g, geometry, shape),
                               pooling.reference_avg_pool_scatter(g, geometry, shape),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- batch norm's layouts

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, LIMIT + 3, 7, 7), (1, 1, 4, 4)])
def test_batch_norm_on_channels_last_images_equals_the_per_channel_layout(training, shape):
    x = rng.normal(size=shape) * 2 + 0.5
    c = shape[1]
    weight, bias = rng.normal(size=c), rng.normal(size=c)
    g = rng.normal(size=shape)
    results = []
    for memory in (x.copy(), _channels_last(x)):
        layout = batchnorm.layout_for(memory, (0, 2, 3))
        nhwc = memory.transpose(0, 2, 3, 1).flags.c_contiguous
        assert isinstance(layout, batchnorm.ChannelsLast) == nhwc
        op = ops.BatchNorm()
        mean, var = np.linspace(-0.5, 0.5, c), np.linspace(0.5, 2.0, c)
        out = op.forward(memory, weight, bias, mean, var, axes=(0, 2, 3), training=training)
        op.needs_input_grad = (True, True, True, False, False)
        results.append((out, op.backward(g)[:3], mean, var))
    (out_a, grads_a, mean_a, var_a), (out_b, grads_b, mean_b, var_b) = results
    np.testing.assert_allclose(out_a, out_b, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(mean_a, mean_b, rtol=1e-12)            # running statistics
    np.testing.assert_allclose(var_a, var_b, rtol=1e-12)


def test_batch_norm_gradient_on_channels_last_images_equals_finite_differences():
    from tinygrad_mnist.gradcheck import gradcheck
    x = Tensor.from_numpy(_channels_last(rng.normal(size=(3, 2, 4, 4))), requires_grad=True)
    w = Tensor(rng.normal(size=2), requires_grad=True, dtype=np.float64)
    b = Tensor(rng.normal(size=2), requires_grad=True, dtype=np.float64)
    weights = rng.normal(size=(3, 2, 4, 4))

    def f(x, w, b):
        out = ops.BatchNorm.apply(x, w, b, Tensor(np.zeros(2), dtype=np.float64),
                                  Tensor(np.ones(2), dtype=np.float64), axes=(0, 2, 3),
                                  momentum=0.0)
        return (out * weights).sum()
    assert gradcheck(f, [x, w, b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_cdf_and_density_keep_their_relative_error_small_in_both_tails(dtype):
    x = np.concatenate([np.linspace(-14, 14, 20001), [0.0, -0.0, 1e-30, -40, 40]]).astype(dtype)
    cdf, pdf = special.normal_cdf_and_pdf(x)
    assert cdf.dtype == pdf.dtype == dtype and cdf.shape == x.shape
    exact = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    density = np.array([math.exp(-float(v) ** 2 / 2) / math.sqrt(2 * math.pi) for v in x])
    tiny = np.finfo(dtype).tiny * 1e3          # below it, subnormals: absolute error only
    body = (exact > tiny) & (np.abs(x) <= 6)
    tail = exact > tiny
    close = 2e-6 if dtype == np.float32 else 1e-14
    assert np.max(np.abs(cdf[body] / exact[body] - 1)) < close
    assert np.max(np.abs(cdf[tail] / exact[tail] - 1)) < 4 * close
    assert np.max(np.abs(cdf - exact)) < 4 * close
    kept = density > tiny
    assert np.max(np.abs(pdf[kept] / density[kept] - 1)) < 4 * close
    cdf, pdf = special.normal_cdf_and_pdf(np.array(0.5, dtype))       # 0-d in, 0-d out
    assert cdf.shape == pdf.shape == () and abs(cdf - 0.6914624612740131) < close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_right_to_its_last_digits_and_saturates_quietly(dtype):
    x = np.concatenate([np.linspace(-120, 120, 20001), [0.0, -800.0, 800.0, -np.inf, np.inf]])
    x = x.astype(dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = special.sigmoid(x)
    exact = np.array([1 / (1 + math.exp(-float(v))) if v > -700 else 0.0 for v in x])
    assert got.dtype == dtype
    kept = exact > np.finfo(dtype).tiny * 1e3
    assert np.max(np.abs(got[kept] / exact[kept] - 1)) < 4 * np.finfo(dtype).eps
    assert np.max(np.abs(got - exact)) < 4 * np.finfo(dtype).eps
    assert special.sigmoid(np.array(0.5, dtype)).shape == ()


def test_a_kernel_as_large_as_the_padded_input_is_valid_and_one_larger_is_refused():
    """Padding counts on both sides: a 3x3 image padded by 1 takes a 5x5 kernel."""
    geometry = Geometry((5, 5), (1, 1), (1, 1))
    assert geometry.output_size("conv2d", 3, 3) == (1, 1)
    x, w = rng.normal(size=(1, 1, 3, 3)), rng.normal(size=(2, 1, 5, 5))
    np.testing.assert_allclose(kconv.conv(x, w, geometry)[0],
                               kconv.reference_conv(x, w, geometry), rtol=1e-12)
    with pytest.raises(ValueError, match="the kernel spans 5x5"):
        Geometry((5, 5), (1, 1), (0, 1)).output_size("conv2d", 3, 3)


def test_measuring_can_be_turned_off_for_runs_that_must_repeat_bit_for_bit():
    import os
    import subprocess
    import sys
    code = ("from tinygrad_mnist.engine.kernels import convolution as k; "
            "print(k.MEASURED_MACS)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for value, expected in (("0", "inf"), ("1", "10000000")):
        env = dict(os.environ, TINYGRAD_MNIST_MEASURE=value, PYTHONPATH=root)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == expected
