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
