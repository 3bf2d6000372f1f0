"""tinygrad_mnist.ops: every op, and Op to write your own (they live in engine/ops.py,
engine/conv.py, engine/norm.py and engine/cells.py)."""
from .engine.ops import *  # noqa: F401,F403
from .engine.conv import *  # noqa: F401,F403
from .engine.norm import BatchNorm, LayerNorm  # noqa: F401
from .engine.cells import LSTMCell  # noqa: F401
