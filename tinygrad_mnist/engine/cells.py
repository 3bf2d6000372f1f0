"""An LSTM step after its products, fused: one op where the layer would otherwise record
thirteen (four slices, four activations, five products and sums) and keep their temporaries.

pre holds the gates' pre-activations in PyTorch's order (i, f, g, o), each H wide, and c the
cell state; the output is h' and c' side by side:

    i, f, o = sigmoid(pre_i), sigmoid(pre_f), sigmoid(pre_o)    g = tanh(pre_g)
    c' = f c + i g        h' = o tanh(c')        z = [h' | c']   (..., 2H)

    dc' = gz_c + gz_h o (1 - tanh(c')^2)                         (through h' and directly)
    dpre = [dc' g i (1 - i) | dc' c f (1 - f) | dc' i (1 - g^2) | gz_h tanh(c') o (1 - o)]
    dc = dc' f

backward and jvp state these formulas with operators that arrays and Tensors share: under
create_graph (and in a recorded jvp) pre and c are Tensors, the gates are recomputed from
them, and the gradient is recorded. On arrays, forward and backward run the same formulas as
in-place array code (_step_arrays, _backward_arrays), which the op table's finite
differences check.
"""
import numpy as np

from . import batching
from . import tensor as _tensor
from .kernels.special import sigmoid
from .ops import Op, add_tangents


def _side_by_side(parts):
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=-1)
    return _tensor.Tensor.cat(parts, axis=-1)


def _gates(pre, c, H):
    """(i, f, g, o, c', tanh c') as functions of Tensors pre and c (either may be an array)."""
    if isinstance(pre, np.ndarray):
        pre = _tensor.Tensor(pre, dtype=pre.dtype)
    i, f, o = pre[..., :H].sigmoid(), pre[..., H:2 * H].sigmoid(), pre[..., 3 * H:].sigmoid()
    g = pre[..., 2 * H:3 * H].tanh()
    c_next = f * c + i * g
    return i, f, g, o, c_next, c_next.tanh()


def _step_arrays(pre, c):
    """forward on arrays: the formula of _gates, written into the output's two halves."""
    H = c.shape[-1]
    act = sigmoid(pre)                     # one call for the three sigmoid gates (g's unused)
    i, f, o = act[..., :H], act[..., H:2 * H], act[..., 3 * H:]
    g = np.tanh(pre[..., 2 * H:3 * H])
    out = np.empty(np.broadcast_shapes(pre.shape[:-1], c.shape[:-1]) + (2 * H,),
                   np.result_type(pre, c))
    c_next = out[..., H:]
    np.multiply(f, c, out=c_next)
    c_next += i * g
    tanh_c = np.tanh(c_next)
    np.multiply(o, tanh_c, out=out[..., :H])
    return (i, f, g, o, c_next, tanh_c), out


def _backward_arrays(gz, c, saved, need):
    """backward on arrays: the formula of LSTMCell.backward, written into dpre's quarters."""
    i, f, g, o, c_next, tanh_c = saved
    H = i.shape[-1]
    gh, gc = gz[..., :H], gz[..., H:]
    dc = tanh_c * tanh_c
    np.subtract(1, dc, out=dc)
    dc *= o
    dc *= gh
    dc += gc                                           # dc' = gz_c + gz_h o (1 - tanh(c')^2)
    dpre = None
    if need[0]:
        dpre = np.empty(dc.shape[:-1] + (4 * H,), dc.dtype)
        for k, by, value, gate in ((0, dc, g, i), (1, dc, c, f), (3, gh, tanh_c, o)):
            part = dpre[..., k * H:(k + 1) * H]        # by value gate (1 - gate)
            np.multiply(by, value, out=part)
            part *= gate
            part *= 1 - gate
        part = dpre[..., 2 * H:3 * H]                  # dc' i (1 - g^2)
        np.multiply(g, g, out=part)
        np.subtract(1, part, out=part)
        part *= i
        part *= dc
    return dpre, (dc * f if need[1] else None)


class LSTMCell(Op):
    """z = [h' | c'] of one LSTM step from the gates' pre-activations and the cell state (the
    module docstring gives the equations and their derivatives)."""
    __slots__ = ("pre", "c", "saved")
    name = "lstm_cell"
    float_result = True
    input_names = ("pre", "c")

    def forward(self, pre, c):
        if pre.shape[-1] % 4 or pre.shape[-1] // 4 != c.shape[-1]:
            raise ValueError(f"lstm_cell: the gates' pre-activations {pre.shape} must be 4 "
                             f"times as wide as the cell state {c.shape}")
        self.pre, self.c = pre, c
        self.saved, out = _step_arrays(pre, c)
        return out

    def _parts(self):
        if isinstance(self.pre, np.ndarray) and isinstance(self.c, np.ndarray):
            return self.saved
        return _gates(self.pre, self.c, self.c.shape[-1])        # as functions of Tensors

    def backward(self, gz):
        if isinstance(gz, np.ndarray) and isinstance(self.pre, np.ndarray):
            return _backward_arrays(gz, self.c, self.saved, self.needs_input_grad)
        i, f, g, o, c_next, tanh_c = self._parts()
        H = i.shape[-1]
        gh, gc = gz[..., :H], gz[..., H:]
        dc = gc + gh * o * (1 - tanh_c * tanh_c)
        need = self.needs_input_grad
        dpre = _side_by_side([dc * g * i * (1 - i), dc * self.c * f * (1 - f),
                              dc * i * (1 - g * g), gh * tanh_c * o * (1 - o)]) if need[0] else None
        return dpre, dc * f if need[1] else None

    def jvp(self, t_pre, t_c):
        i, f, g, o, c_next, tanh_c = self._parts()
        H = i.shape[-1]
        through_gates = None if t_pre is None else (
            t_pre[..., :H] * g * i * (1 - i) + t_pre[..., H:2 * H] * self.c * f * (1 - f)
            + t_pre[..., 2 * H:3 * H] * i * (1 - g * g))
        t_c_next = add_tangents(through_gates, None if t_c is None else t_c * f)
        t_h = add_tangents(None if t_c_next is None else t_c_next * o * (1 - tanh_c * tanh_c),
                           None if t_pre is None else t_pre[..., 3 * H:] * tanh_c * o * (1 - o))
        return _side_by_side([t_h, t_c_next])

    batch = batching.elementwise       # rows stay rows: the leading axes broadcast


__all__ = ["LSTMCell"]
