"""Batches of aligned arrays, as a training loop consumes them (torch.utils.data.DataLoader
over a TensorDataset)."""
import math

import numpy as np

from .engine import Tensor


class DataLoader:
    """Iterate over aligned arrays (say `(images, labels)`) in batches: each batch is a tuple
    with one Tensor per array (a single array gives single Tensors).

    shuffle: a new random order each epoch (each `iter()`), drawn from a generator made once
    from `seed`, so the sequence of epochs is reproducible; without shuffle, the arrays' own
    order. drop_last: leave out a last batch smaller than batch_size. `len()` is the number of
    batches of one epoch. Batches hold copies of the selected rows (fancy indexing), never
    views that a later batch could overwrite.
    """

    def __init__(self, arrays, batch_size, shuffle=False, drop_last=False, seed=None):
        self.single = isinstance(arrays, (np.ndarray, Tensor))
        items = [arrays] if self.single else list(arrays)
        if not items:
            raise ValueError("DataLoader: needs at least one array")
        self.arrays = []
        for i, a in enumerate(items):
            a = a.data if isinstance(a, Tensor) else a
            if not isinstance(a, np.ndarray) or a.ndim == 0:
                raise TypeError(f"DataLoader: array {i} must be a NumPy array or Tensor with a "
                                f"first axis, got {type(a).__name__}"
                                + (f" of shape {a.shape}" if isinstance(a, np.ndarray) else ""))
            self.arrays.append(a)
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"DataLoader: the arrays must have the same length, got {lengths}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got "
                             f"{batch_size!r}")
        self.n, self.batch_size = lengths[0], int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def indices(self):
        """The index array of each batch of one epoch (the next epoch's order when
        shuffling)."""
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        for k in range(len(self)):
            yield order[k * self.batch_size:(k + 1) * self.batch_size]

    def __iter__(self):
        for idx in self.indices():
            batch = tuple(Tensor.from_numpy(a[idx]) for a in self.arrays)
            yield batch[0] if self.single else batch
