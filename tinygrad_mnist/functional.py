"""nn.functional: the functions behind the layers, by PyTorch's names
(torch.nn.functional)."""
from .attention import scaled_dot_product_attention  # noqa: F401
from .losses import binary_cross_entropy, cross_entropy, mse_loss  # noqa: F401


def relu(x):
    return x.relu()


def gelu(x):
    return x.gelu()


def silu(x):
    return x.silu()


def softmax(x, dim=-1):
    return x.softmax(axis=dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(axis=dim)
