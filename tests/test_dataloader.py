"""DataLoader: batches of aligned arrays, shuffled reproducibly, with and without the last
partial batch, and clear errors for bad arguments."""
import numpy as np
import pytest

from tinygrad_mnist import Tensor
from tinygrad_mnist.data import DataLoader

X = np.arange(20, dtype=np.float32).reshape(10, 2)
Y = np.arange(10)


def test_batches_in_order_with_a_last_partial_batch():
    loader = DataLoader((X, Y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    for (x, y), start in zip(batches, (0, 4, 8)):
        assert isinstance(x, Tensor) and isinstance(y, Tensor)
        np.testing.assert_array_equal(y.data, Y[start:start + 4])
        np.testing.assert_array_equal(x.data, X[start:start + 4])


def test_drop_last_leaves_out_the_partial_batch():
    loader = DataLoader((X, Y), batch_size=4, drop_last=True)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]
    assert len(DataLoader((X, Y), batch_size=5, drop_last=True)) == 2


def test_shuffle_covers_every_row_once_keeps_rows_aligned_and_changes_each_epoch():
    loader = DataLoader((X, Y), batch_size=3, shuffle=True, seed=0)
    epochs = []
    for _ in range(3):
        ys = []
        for x, y in loader:
            np.testing.assert_array_equal(x.data, X[y.data])     # rows stay aligned
            ys.append(y.data)
        order = np.concatenate(ys)
        assert sorted(order) == list(range(10))
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])


def test_a_seed_reproduces_the_sequence_of_epochs():
    def orders(seed):
        loader = DataLoader(Y, batch_size=4, shuffle=True, seed=seed)
        return [np.concatenate([y.data for y in loader]) for _ in range(2)]
    first, again, other = orders(5), orders(5), orders(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_a_single_array_gives_single_tensors_and_batches_are_copies():
    loader = DataLoader(X, batch_size=4)
    first = next(iter(loader))
    assert isinstance(first, Tensor) and first.shape == (4, 2)
    first.data[...] = -1
    assert X.min() == 0


@pytest.mark.parametrize("args, error, words", [
    (((X, Y[:5]), 2), ValueError, "same length"),
    (((X, Y), 0), ValueError, "batch_size"),
    (((X, Y), 2.5), ValueError, "batch_size"),
    (((), 2), ValueError, "at least one"),
    ((([1, 2, 3],), 2), TypeError, "array 0"),
    (((X, np.float32(3)), 2), TypeError, "array 1"),
])
def test_bad_arguments_are_one_clear_error(args, error, words):
    with pytest.raises(error, match=words):
        DataLoader(*args)
