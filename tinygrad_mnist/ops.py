"""tinygrad_mnist.ops: every op, and Op to write your own (they live in engine/ops.py)."""
from .engine.ops import *  # noqa: F401,F403
