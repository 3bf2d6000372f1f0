"""Whether a run fits in memory, estimated before anything is allocated."""
import os

from . import models
from .data import DATASETS
from .factories import parameter_count


# float32 arrays the size of the parameters: weights, gradients, one scratch buffer, and the
# optimizer's own state
_STATE_BUFFERS = {"sgd": 3, "momentum": 4, "nesterov": 4, "rmsprop": 4, "adam": 5, "adamw": 5}


def memory_needed(config, train_size=None):
    """(model bytes, batch bytes, data bytes) a run needs, roughly, in float32: parameters with
    their gradients and optimizer state; a batch's activations and their gradients (a few
    arrays per layer); the standardized training and test images (the dataset's own counts,
    or `train_size`, and at most --subset of each)."""
    info = DATASETS[config.dataset]
    train_size, test_size = _images(config, info, train_size)
    params = parameter_count(config)
    model = 4 * params * _STATE_BUFFERS.get(config.optimizer, 5)
    per_image = (models.activation_sizes(config.arch, config.hidden) * 6
                 + models.im2col_sizes(config.arch, config.cnn_kernel) * 2)
    batch = 4 * config.batch_size * per_image
    data = 4 * info.pixels * (train_size + test_size)
    return model, batch, data


def _images(config, info, train_size=None):
    """The training and test images a run holds: the dataset's (or train_size), at most
    --subset of each."""
    train_size = info.train_size if train_size is None else train_size
    limit = config.subset or max(train_size, info.test_size)
    return min(train_size, limit), min(info.test_size, limit)


def available_memory():
    """Bytes this machine can still give a new allocation (MemAvailable on Linux, else the
    physical memory), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, train_size=None):
    """Refuse, before allocating anything, a network and batch that cannot fit in memory."""
    model, batch, data = memory_needed(config, train_size)
    available = available_memory()
    if available is not None and model + batch + data > available:
        gb = 1e9
        network = (f"--hidden {','.join(map(str, config.hidden))}" if config.arch == "mlp"
                   else f"--arch {config.arch}")
        raise ValueError(
            f"{network} with --batch-size "
            f"{config.batch_size} needs about {(model + batch + data) / gb:,.1f} GB (weights, "
            f"gradients and {config.optimizer} state {model / gb:,.1f} GB, a batch's "
            f"activations {batch / gb:,.1f} GB, the images {data / gb:,.1f} GB) but this "
            f"machine has {available / gb:,.1f} GB available; choose smaller layers or batches")
