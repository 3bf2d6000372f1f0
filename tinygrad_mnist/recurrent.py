"""Recurrent layers as PyTorch has them (nn.RNN, nn.GRU, nn.LSTM): the same parameter names,
shapes, gate order, equations, initialization and return values, so that a state_dict loads
across. A sequence is unrolled in Python, one step an ordinary recorded graph, so that
backpropagation through time is plain backward (and a jit records one step per length).

For each layer k (input size I, hidden size H, gates G: 1 for RNN, 3 for GRU, 4 for LSTM):
weight_ih_lk (G*H, I) (for k > 0, I = H), weight_hh_lk (G*H, H), bias_ih_lk and bias_hh_lk
(G*H), all drawn from U(-1/sqrt(H), 1/sqrt(H)). The input projections of every step are one
product (x @ W_ih^T + b_ih for the whole sequence, with b_hh too where it is only added: RNN
and LSTM); each step adds h @ W_hh^T (+ b_hh for the GRU). An LSTM step's gates are one fused
op (engine/cells.py).

    RNN   h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)            (or relu)
    GRU   r, z = sigmoid(...), n = tanh(x_n + r * (h W_hn^T + b_hn))    gates in order r, z, n
          h' = (1 - z) * n + z * h
    LSTM  i, f, o = sigmoid(...), g = tanh(...)                      gates in order i, f, g, o
          c' = f * c + i * g,  h' = o * tanh(c')
"""
import numpy as np

from .engine import Tensor, get_rng, ops
from .engine.cells import LSTMCell
from .module import Module, _as_tensor, _size


class _Recurrent(Module):
    gates = 1
    kind = "RNN"
    gates_split_hidden_bias = False    # GRU: b_hn sits inside r * (h W_hn^T + b_hn)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False):
        self.input_size = _size(self.kind, "input_size", input_size)
        self.hidden_size = _size(self.kind, "hidden_size", hidden_size)
        self.num_layers = _size(self.kind, "num_layers", num_layers)
        if self.num_layers < 1:
            raise ValueError(f"{self.kind}: num_layers must be at least 1, got {num_layers}")
        self.bias, self.batch_first = bias, batch_first
        bound = 1.0 / np.sqrt(hidden_size) if hidden_size else 0.0
        rows = self.gates * hidden_size
        for k in range(num_layers):
            inputs = input_size if k == 0 else hidden_size
            for name, shape in ((f"weight_ih_l{k}", (rows, inputs)),
                                (f"weight_hh_l{k}", (rows, hidden_size)),
                                (f"bias_ih_l{k}", (rows,)), (f"bias_hh_l{k}", (rows,))):
                if name.startswith("bias") and not bias:
                    setattr(self, name, None)
                    continue
                values = get_rng().uniform(-bound, bound, size=shape).astype(np.float32)
                setattr(self, name, Tensor.from_numpy(values, requires_grad=True))

    def _layer(self, k):
        return tuple(getattr(self, f"{w}_l{k}") for w in ("weight_ih", "weight_hh", "bias_ih",
                                                          "bias_hh"))

    def _sequence(self, x):
        """x as (L, N, I) and a function giving the output the caller's way."""
        x = _as_tensor(x)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"{self.kind}: input of shape {x.shape} does not fit {self!r}: it "
                             f"must be (L, N, {self.input_size}), (N, L, {self.input_size}) "
                             f"with batch_first, or unbatched (L, {self.input_size})")
        if x.ndim == 2:                                   # unbatched: a batch of one
            return x.reshape((x.shape[0], 1, x.shape[1])), lambda y: y.reshape(
                (y.shape[0], y.shape[2])), False
        if self.batch_first:
            return x.transpose((1, 0, 2)), lambda y: y.transpose((1, 0, 2)), True
        return x, lambda y: y, True

    def _initial(self, state, batch, dtype, batched, what):
        """The initial state (num_layers, N, H): zeros, or the caller's."""
        shape = (self.num_layers, batch, self.hidden_size)
        if state is None:
            return Tensor(np.zeros(shape, dtype=dtype), dtype=dtype)
        state = _as_tensor(state)
        given = state if batched else state.reshape((self.num_layers, 1, self.hidden_size))
        if given.shape != shape:
            raise ValueError(f"{self.kind}: {what} of shape {state.shape} does not fit: "
                             f"expected {shape if batched else shape[:1] + shape[2:]}")
        return given

    @staticmethod
    def _project(x, weight, bias):
        return ops.Linear.apply(x, weight) if bias is None else ops.Linear.apply(x, weight, bias)

    def _run(self, x, states):
        """Every layer over the whole sequence; returns the last layer's outputs (L, N, H) and
        each state's final value per layer."""
        finals = [[] for _ in states]
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer(k)
            if b_hh is not None and not self.gates_split_hidden_bias:
                b_ih, b_hh = b_ih + b_hh, None                # both added once, not per step
            projected = self._project(x, w_ih, b_ih)          # every step's input at once
            state = tuple(s[k] for s in states)
            outputs = []
            for t in range(x.shape[0]):
                state = self._cell(projected[t], state, w_hh, b_hh)
                outputs.append(state[0])
            x = Tensor.stack(outputs, axis=0) if outputs else projected[..., :self.hidden_size] * 0
            for final, s in zip(finals, state):
                final.append(s)
        return x, [Tensor.stack(f, axis=0) for f in finals]

    def __repr__(self):
        extra = (f", num_layers={self.num_layers}" if self.num_layers != 1 else "") + (
            ", batch_first=True" if self.batch_first else "") + (
            ", bias=False" if not self.bias else "")
        return f"{self.kind}({self.input_size}, {self.hidden_size}{extra})"


class RNN(_Recurrent):
    """torch.nn.RNN: module(x, h0=None) -> (output, h_n); nonlinearity 'tanh' or 'relu'."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first)

    def _cell(self, x_t, state, w_hh, b_hh):
        pre = x_t + self._project(state[0], w_hh, b_hh)
        return (pre.tanh() if self.nonlinearity == "tanh" else pre.relu(),)

    def forward(self, x, h0=None):
        x, shaped, batched = self._sequence(x)
        h0 = self._initial(h0, x.shape[1], x.dtype, batched, "h0")
        out, (h_n,) = self._run(x, [h0])
        return shaped(out), h_n if batched else h_n.reshape((self.num_layers, self.hidden_size))


class GRU(_Recurrent):
    """torch.nn.GRU: module(x, h0=None) -> (output, h_n); gates r, z, n."""
    gates, kind = 3, "GRU"
    gates_split_hidden_bias = True

    def _cell(self, x_t, state, w_hh, b_hh):
        (h,) = state
        H = self.hidden_size
        hidden = self._project(h, w_hh, b_hh)
        r = (x_t[..., :H] + hidden[..., :H]).sigmoid()
        z = (x_t[..., H:2 * H] + hidden[..., H:2 * H]).sigmoid()
        n = (x_t[..., 2 * H:] + r * hidden[..., 2 * H:]).tanh()
        return ((1 - z) * n + z * h,)

    forward = RNN.forward


class LSTM(_Recurrent):
    """torch.nn.LSTM: module(x, (h0, c0)=None) -> (output, (h_n, c_n)); gates i, f, g, o."""
    gates, kind = 4, "LSTM"

    def _cell(self, x_t, state, w_hh, b_hh):
        h, c = state
        H = self.hidden_size
        step = LSTMCell.apply(x_t + self._project(h, w_hh, b_hh), c)     # [h' | c'], fused
        return step[..., :H], step[..., H:]

    def forward(self, x, state=None):
        x, shaped, batched = self._sequence(x)
        h0, c0 = (None, None) if state is None else state
        h0 = self._initial(h0, x.shape[1], x.dtype, batched, "h0")
        c0 = self._initial(c0, x.shape[1], x.dtype, batched, "c0")
        out, (h_n, c_n) = self._run(x, [h0, c0])
        if not batched:
            h_n, c_n = (s.reshape((self.num_layers, self.hidden_size)) for s in (h_n, c_n))
        return shaped(out), (h_n, c_n)
