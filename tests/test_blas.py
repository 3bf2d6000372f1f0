"""Per-product BLAS threads: same results to rounding, the thread count restored even under
Python threads, the documented rule."""
import threading
import time

import numpy as np
import pytest

from tinygrad_mnist.engine.kernels import blas


@pytest.mark.parametrize("sa, sb", [((128, 32), (32, 784)), ((32, 784), (784, 128)),
                                    ((64, 10), (10, 128)), ((2, 3, 16), (16, 5)), ((16,), (16,)),
                                    ((512, 8), (8, 512))])
def test_matmul_equals_numpy_and_restores_threads(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
    functions = blas._openblas_thread_functions()
    before = functions[0]() if functions else None
    # BLAS promises no bit-identical results across thread counts: compare to rounding
    np.testing.assert_allclose(blas.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blas.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-5)
    if functions:
        assert functions[0]() == before


def test_rule_picks_one_thread_only_for_small_inner_dimensions():
    assert blas.one_thread_is_faster(128, 10, 128)          # through a 10-wide layer
    assert blas.one_thread_is_faster(128, 32, 784)          # dW of a batch of 32
    assert not blas.one_thread_is_faster(512, 32, 784)      # larger: both threads pay
    assert not blas.one_thread_is_faster(128, 784, 128)     # a forward layer
    assert not blas._needs_switch(8, 4, 4)                  # OpenBLAS keeps it on one thread


def test_concurrent_small_products_all_run_on_one_thread_and_restore(monkeypatch):
    """Three Python threads run small products at once. Each product must see one BLAS thread
    from start to end (the old switch let one thread restore 4 while another was still
    inside its product), and the count the process had must come back."""
    setting = {"threads": 4}

    def get():
        time.sleep(0.0002)                 # yield between calls, as real threads may
        return setting["threads"]

    def put(n):
        time.sleep(0.0002)
        setting["threads"] = n

    class Probe(np.ndarray):
        """An array whose product notes the thread count as it starts and as it ends."""
        def __matmul__(self, other):
            seen.append(setting["threads"])
            time.sleep(0.001)
            seen.append(setting["threads"])
            return np.asarray(self) @ np.asarray(other)

    monkeypatch.setattr(blas, "_threads", (get, put))
    a, b = np.ones((1024, 8), np.float32).view(Probe), np.ones((8, 1024), np.float32)
    seen = []

    def work():
        for _ in range(20):
            assert blas.matmul(a, b)[0, 0] == 8.0

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(seen) == 120 and set(seen) == {1}
    assert setting["threads"] == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_adds_alpha_times_x_in_place_by_blas_or_numpy(dtype):
    rng = np.random.default_rng(5)
    for size in (1000, blas.AXPY_SIZE + 7):
        x = rng.normal(size=size).astype(dtype)
        y = rng.normal(size=size).astype(dtype)
        expected = y.astype(np.float64) - 0.3 * x.astype(np.float64)
        out = blas.axpy(-0.3, x, y, np.empty_like(y))
        assert out is y and y.dtype == dtype
        np.testing.assert_allclose(y, expected, rtol=1e-6 if dtype == np.float32 else 1e-14,
                                   atol=1e-6 if dtype == np.float32 else 1e-14)
    strided = rng.normal(size=2 * blas.AXPY_SIZE).astype(dtype)[::2]     # NumPy's two steps
    y = np.ones(blas.AXPY_SIZE, dtype)
    blas.axpy(2.0, strided, y, np.empty_like(y))
    np.testing.assert_array_equal(y, 1 + 2 * strided)


def test_axpy_is_found_in_numpys_openblas():
    if not blas._openblas_thread_functions():
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    assert set(blas._axpy_functions()) == {(name, np.dtype(t)) for name in ("axpy", "axpby")
                                           for t in (np.float32, np.float64)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpby_scales_y_and_adds_x_in_place_by_blas_or_numpy(dtype):
    rng = np.random.default_rng(6)
    for size in (1000, blas.AXPY_SIZE + 3):
        x = rng.normal(size=size).astype(dtype)
        y = rng.normal(size=size).astype(dtype)
        expected = 0.9 * y.astype(np.float64) + x.astype(np.float64)
        assert blas.axpby(1, x, 0.9, y) is y and y.dtype == dtype
        tolerance = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="axpby: NumPy's form takes alpha = 1"):
        blas.axpby(2, np.ones(3), 0.5, np.ones(3))
