"""Per-product BLAS threads: same results, the thread count restored, the documented rule."""
import numpy as np
import pytest

from tinygrad_mnist import blas


@pytest.mark.parametrize("sa, sb", [((128, 32), (32, 784)), ((32, 784), (784, 128)),
                                    ((64, 10), (10, 128)), ((2, 3, 16), (16, 5)), ((16,), (16,))])
def test_matmul_equals_numpy_and_restores_threads(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
    functions = blas._openblas_thread_functions()
    before = functions[0]() if functions else None
    np.testing.assert_array_equal(blas.matmul(a, b), a @ b)
    if functions:
        assert functions[0]() == before


def test_rule_picks_one_thread_only_for_small_inner_dimensions():
    assert blas.one_thread_is_faster(128, 10, 128)          # through a 10-wide layer
    assert blas.one_thread_is_faster(128, 32, 784)          # dW of a batch of 32
    assert not blas.one_thread_is_faster(512, 32, 784)      # larger: both threads pay
    assert not blas.one_thread_is_faster(128, 784, 128)     # a forward layer
