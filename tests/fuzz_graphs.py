"""Random expression graphs over every op, written as Python source so that a failure prints
as a few lines anyone can paste and run.

A program is built one line at a time: each line applies a randomly chosen op to values made
so far (fan-out comes from picking a value twice) or to new inputs of a shape that fits, and is
kept only if it runs and its result is finite and moderate. The program returns a weighted sum
of its last values, a scalar whose gradient reaches every line. `shrink` deletes lines while a
failure persists.
"""
import re
import textwrap
import warnings

import numpy as np

from tinygrad_mnist import Tensor, nn, ops
from tinygrad_mnist.op_cases import OP_CASES, UNARY_SHAPES

# the op table's elementwise one-input rows on any input (no domain, no kink): the fuzzer
# writes those _unary does not spell out as ROW[name](x), so a new one is fuzzed as it is added
ROW = {case.name: case.fn for case in OP_CASES if case.shapes == UNARY_SHAPES and
       all(d is None for d in case.domains) and not case.kinks}
ENV = {"np": np, "Tensor": Tensor, "ops": ops, "nn": nn, "ROW": ROW}


def literal(array):
    """Python source for a small array, exact (repr round-trips floats)."""
    array = np.asarray(array)
    dtype = "" if array.dtype == np.float64 else f", dtype=np.{array.dtype}"
    if array.ndim == 0:
        return f"np.array({array.item()!r}{dtype})"
    return f"np.array({array.tolist()!r}{dtype})"


class Program:
    """Source lines over inputs x0, x1, ... (their float64 values in `inputs`)."""

    def __init__(self, inputs, lines, outputs, weights):
        self.inputs, self.lines, self.outputs, self.weights = inputs, lines, outputs, weights

    def source(self):
        names = ", ".join(f"x{i}" for i in range(len(self.inputs)))
        terms = " + ".join(f"({v} * {literal(w)}).sum()" for v, w in
                           zip(self.outputs, self.weights))
        body = "\n".join(self.lines + [f"return {terms}"])
        return f"def f({names}):\n{textwrap.indent(body, '    ')}\n"

    def function(self):
        namespace = dict(ENV)
        exec(self.source(), namespace)
        return namespace["f"]

    def runs(self):
        """True if the forward pass runs (a shrunk candidate may not fit its shapes)."""
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                self.function()(*[Tensor(a, requires_grad=True, dtype=np.float64)
                                  for a in self.inputs])
        except Exception:
            return False
        return True

    def reproduction(self):
        """The program and its inputs as a script."""
        inputs = "\n".join(f"x{i} = Tensor({literal(a)}, requires_grad=True, dtype=np.float64)"
                           for i, a in enumerate(self.inputs))
        args = ", ".join(f"x{i}" for i in range(len(self.inputs)))
        return (f"import numpy as np\nfrom tinygrad_mnist import Tensor, nn, ops\n"
                f"from tinygrad_mnist.gradcheck import gradcheck\n"
                f"from tinygrad_mnist.op_cases import OP_CASES\n"
                f"ROW = {{case.name: case.fn for case in OP_CASES}}\n\n{self.source()}\n{inputs}\n"
                f"gradcheck(f, [{args}])\n")

    def without(self, k):
        """The program with line k deleted: later uses of its value take the value of its
        first operand when that has the same shape (else the candidate simply fails to run)."""
        match = re.match(r"(v\d+) = (.*)", self.lines[k])
        name = match.group(1)
        operands = re.findall(r"\b([vx]\d+)\b", match.group(2))
        stand_in = operands[0] if operands else None
        lines = self.lines[:k] + [re.sub(rf"\b{name}\b", stand_in or name, line)
                                  for line in self.lines[k + 1:]]
        outputs = [stand_in if v == name else v for v in self.outputs]
        if stand_in is None and name in outputs:
            return None
        return Program(self.inputs, lines, outputs, self.weights)

    def without_output(self, k):
        """The program with output term k dropped (one always stays)."""
        if len(self.outputs) == 1:
            return None
        keep = [i for i in range(len(self.outputs)) if i != k]
        return Program(self.inputs, self.lines, [self.outputs[i] for i in keep],
                       [self.weights[i] for i in keep])


class Builder:
    """Builds one random program; see the module docstring."""

    def __init__(self, rng, max_lines):
        self.rng, self.max_lines = rng, max_lines
        self.inputs, self.lines = [], []
        self.env = dict(ENV)
        self.shapes = {}                      # name -> shape of every value so far

    # random pieces ------------------------------------------------------------------------

    def shape(self, max_ndim=3):
        return tuple(int(n) for n in self.rng.integers(1, 5, size=self.rng.integers(0,
                                                                                    max_ndim + 1)))

    def new_input(self, shape):
        name = f"x{len(self.inputs)}"
        value = self.rng.normal(size=shape)
        self.inputs.append(value)
        self.env[name] = Tensor(value, requires_grad=True, dtype=np.float64)
        self.shapes[name] = tuple(shape)
        return name

    def pick(self, condition=lambda s: True):
        """A value made so far (recent ones more often), or None."""
        names = [n for n, s in self.shapes.items() if condition(s)]
        if not names:
            return None
        weights = np.arange(1, len(names) + 1, dtype=float) ** 2
        return names[self.rng.choice(len(names), p=weights / weights.sum())]

    def broadcastable(self, shape):
        """A shape that broadcasts with `shape`: a suffix of it, some sizes 1, maybe longer."""
        out = list(shape[self.rng.integers(0, len(shape) + 1):])
        out = [1 if self.rng.random() < 0.3 else n for n in out]
        if len(shape) < 3 and self.rng.random() < 0.2:
            out = [int(self.rng.integers(1, 4))] + [1] * (len(shape) - len(out)) + out
        return tuple(out)

    def operand(self, shape):
        """A second operand for an elementwise op: a value, a new input, a number or an
        array."""
        r = self.rng.random()
        if r < 0.35:
            other = self.pick(lambda s: _broadcasts(s, shape))
            if other is not None:
                return other
        if r < 0.65:
            return self.new_input(self.broadcastable(shape))
        if r < 0.8:
            return repr(round(float(self.rng.uniform(-2, 2)), 3))
        return literal(np.round(self.rng.normal(size=self.broadcastable(shape)), 3))

    def axis(self, ndim, allow_tuple=True):
        if ndim == 0:
            return None
        choice = self.rng.random()
        if choice < 0.25:
            return None
        if allow_tuple and choice < 0.5 and ndim > 1:
            k = self.rng.integers(1, ndim + 1)
            axes = self.rng.choice(ndim, size=k, replace=False)
            return tuple(int(a) - (ndim if self.rng.random() < 0.3 else 0) for a in axes)
        return int(self.rng.integers(-ndim, ndim))

    def index(self, shape):
        """A random NumPy index for `shape`: slices (negative steps too), ints, None,
        Ellipsis, one or two integer arrays, or a boolean mask."""
        rng = self.rng
        if shape and rng.random() < 0.15:
            mask = rng.random(shape[:rng.integers(1, len(shape) + 1)]) < 0.6
            return literal(mask)
        parts, arrays = [], 0
        for n in shape:
            r = rng.random()
            if r < 0.35:
                start, stop = rng.integers(-n, n + 1, size=2)
                step = int(rng.choice([1, 1, 2, -1, -2]))
                parts.append(f"{start}:{stop}:{step}")
            elif r < 0.55:
                parts.append(str(int(rng.integers(-n, n))))
            elif r < 0.75 and arrays < 2:
                size = 3 if arrays else int(rng.integers(1, 5))
                parts.append(literal(rng.integers(-n, n, size=size)))
                arrays += 1
            else:
                parts.append(":")
            if rng.random() < 0.1:
                parts.append("None")
        if parts and rng.random() < 0.15:
            parts[0] = "..."
        return ", ".join(parts) if parts else "..."

    # one line -----------------------------------------------------------------------------

    def add_line(self):
        """Try ops until one gives a valid line; True if one did."""
        for _ in range(20):
            kind = OPS[self.rng.integers(len(OPS))]
            expr = kind(self)
            if expr is None:
                continue
            name = f"v{len(self.lines) + 1}"
            saved = (len(self.inputs), dict(self.shapes))
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    value = eval(expr, self.env)
            except (ValueError, IndexError, TypeError, ZeroDivisionError, AttributeError):
                value = None                       # not valid for these shapes
            if (isinstance(value, Tensor) and value.dtype == np.float64 and value.requires_grad
                    and value.size and np.isfinite(value.data).all()
                    and np.abs(value.data).max() < 1e4):
                self.env[name] = value
                self.shapes[name] = value.shape
                self.lines.append(f"{name} = {expr}")
                return True
            del self.inputs[saved[0]:]             # inputs made for a line that was not kept
            self.shapes = saved[1]
            for k in [k for k in self.env if re.fullmatch(r"x\d+", k)
                      and int(k[1:]) >= saved[0]]:
                del self.env[k]
        return False

    def build(self):
        for _ in range(int(self.rng.integers(1, 3))):
            self.new_input(self.shape())
        target = int(self.rng.integers(2, self.max_lines + 1))
        while len(self.lines) < target and self.add_line():
            pass
        made = [f"v{i}" for i in range(1, len(self.lines) + 1)]
        if not made:
            return None
        outputs = [made[-1]] + [v for v in made[:-1] if self.rng.random() < 0.3]
        weights = [np.round(self.rng.normal(size=self.shapes[v]), 3) for v in outputs]
        return Program(self.inputs, self.lines, outputs, weights)


def _broadcasts(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- the ops, as source
# Each returns an expression over values made so far (or new inputs), or None when no value
# fits. Positive-only ops get x*x + 0.5 (a log, a square root, a base), so that finite
# differences stay inside the domain.

def _binary(symbol):
    def make(b):
        a = b.pick()
        return f"{a} {symbol} {b.operand(b.shapes[a])}"
    make.ops = {"+": ("add",), "-": ("sub",), "*": ("mul",)}[symbol]
    return make


def _divide(b):
    a = b.pick()
    other = b.operand(b.shapes[a])
    return f"{a} / ({other} * {other} + 0.5)"


def _reverse(b):
    a = b.pick()
    number = repr(round(float(b.rng.uniform(0.5, 3)), 3))
    return str(b.rng.choice([f"{number} - {a}", f"{number} / ({a} * {a} + 0.5)",
                         f"{number} ** {a}", f"{literal(np.round(b.rng.uniform(0.5, 2, size=b.broadcastable(b.shapes[a])), 3))} * {a}"]))


def _power(b):
    a = b.pick()
    choice = b.rng.random()
    if choice < 0.3:
        return f"{a} ** {int(b.rng.integers(0, 4))}"
    if choice < 0.6:
        return f"({a} * {a} + 0.5) ** {round(float(b.rng.uniform(-1.5, 1.5)), 3)!r}"
    other = b.operand(b.shapes[a])
    if choice < 0.8 and not other[0].isdigit() and not other.startswith("np."):
        # a base with exact zeros; an exponent of 2 or more, so that the first and second
        # derivatives there are finite (else a ReLU mask times inf is NaN: see ops.ReLU)
        return f"{a}.relu() ** ({other} * {other} + 2)"
    return f"({a} * {a} + 0.5) ** {other}"


def _extremum(b):
    a = b.pick()
    return f"{a}.{str(b.rng.choice(['maximum', 'minimum']))}({b.operand(b.shapes[a])})"


def _unary(b):
    a = b.pick()
    forms = {"neg": f"-{a}", "exp": f"{a}.exp()", "log": f"({a} * {a} + 0.5).log()",
             "sqrt": f"({a} * {a} + 0.5).sqrt()", "abs": f"abs({a})", "relu": f"{a}.relu()",
             "sigmoid": f"{a}.sigmoid()", "tanh": f"np.tanh({a})", "sin": f"np.sin({a})",
             "cos": f"{a}.cos()", "clip": f"{a}.clip(-0.7, 0.4)",
             "numpy exp": f"np.exp(np.sum({a}, axis=-1) * 0.1)" if b.shapes[a] else
             f"np.exp({a})"}
    forms.update({name: f"ROW[{name!r}]({a})" for name in ROW if name not in forms})
    return forms[list(forms)[b.rng.integers(len(forms))]]


def _softmax(b):
    a = b.pick(lambda s: len(s) >= 1)
    if a is None:
        return None
    axis = int(b.rng.integers(-len(b.shapes[a]), len(b.shapes[a])))
    return f"{a}.{str(b.rng.choice(['softmax', 'log_softmax']))}(axis={axis})"


def _reduction(b):
    a = b.pick()
    ndim = len(b.shapes[a])
    op = str(b.rng.choice(["sum", "mean", "max", "min", "var", "std", "norm"]))
    axis, keepdims = b.axis(ndim), bool(b.rng.random() < 0.4)
    if op == "norm":
        return f"np.linalg.norm({a}, axis={axis!r}, keepdims={keepdims})"
    if op in ("var", "std"):
        ddof = int(b.rng.integers(0, 2))
        return f"{a}.{op}(axis={axis!r}, ddof={ddof}, keepdims={keepdims})"
    return f"{a}.{op}(axis={axis!r}, keepdims={keepdims})"


def _shape(b):
    a = b.pick()
    shape, rng = b.shapes[a], b.rng
    ndim = len(shape)
    choice = rng.integers(8)
    if choice == 0:
        sizes = [int(rng.choice([d for d in range(1, 13) if int(np.prod(shape)) % d == 0]))]
        rest = int(np.prod(shape)) // sizes[0]
        return f"{a}.reshape({sizes[0]}, -1)" if rest > 1 or rng.random() < 0.5 else \
            f"{a}.reshape(-1)"
    if choice == 1:
        return f"{a}.flatten()" if rng.random() < 0.5 else f"{a}.view(-1, 1)"
    if choice == 2:
        return f"{a}.unsqueeze({int(rng.integers(-ndim - 1, ndim + 1))})"
    if choice == 3:
        return f"{a}.squeeze()"
    if choice == 4 and ndim:
        return f"{a}.transpose({', '.join(str(int(i)) for i in rng.permutation(ndim))})"
    if choice == 5 and ndim >= 2:
        i, j = rng.integers(-ndim, ndim, size=2)
        return f"{a}.swapaxes({i}, {j})"
    if choice == 6:
        return f"{a}.T"
    if ndim:
        return f"Tensor.stack(list({a}))"
    return None


def _getitem(b):
    a = b.pick(lambda s: len(s) >= 1)
    if a is None:
        return None
    if b.rng.random() < 0.15:
        return f"{a}[{a} > 0]"
    return f"{a}[{b.index(b.shapes[a])}]"


def _join(b):
    a = b.pick()
    shape, rng = b.shapes[a], b.rng
    if rng.random() < 0.5 or not shape:
        axis = int(rng.integers(-len(shape) - 1, len(shape) + 1))
        other = b.pick(lambda s: s == shape) if rng.random() < 0.5 else b.new_input(shape)
        return f"Tensor.stack([{a}, {other}], axis={axis})"
    axis = int(rng.integers(-len(shape), len(shape)))
    wider = list(shape)
    wider[axis] = int(rng.integers(1, 4))
    other = b.new_input(tuple(wider)) if rng.random() < 0.7 else a
    join = str(rng.choice(["Tensor.concat", "Tensor.cat", "np.concatenate"]))
    return f"{join}([{a}, {other}], axis={axis})"


def _broadcast(b):
    a = b.pick()
    shape = b.shapes[a]
    target = tuple(int(b.rng.integers(1, 4)) if n == 1 else n for n in shape)
    if len(shape) < 3:
        target = (int(b.rng.integers(1, 4)),) + target
    return f"np.broadcast_to({a}, {target})"


def _where(b):
    a = b.pick()
    shape = b.shapes[a]
    choice = b.rng.random()
    if choice < 0.4:
        other = b.operand(shape)
        return f"np.where({literal(b.rng.integers(-1, 2, size=b.broadcastable(shape)))}, {a}, {other})"
    if choice < 0.7:
        return f"np.where({a} > 0.2, {a}, {b.operand(shape)})"
    other = b.pick(lambda s: _broadcasts(s, shape))
    return f"np.where({a} > {other}, {a} * 2, {other})"


def _matmul(b):
    a = b.pick(lambda s: len(s) >= 1)
    if a is None:
        return None
    shape, rng = b.shapes[a], b.rng
    k = shape[-1]
    if rng.random() < 0.2:
        left = np.round(rng.normal(size=(int(rng.integers(1, 4)), shape[-2] if len(shape) >= 2
                                          else k)), 3)
        return f"{literal(left)} @ {a}" if len(shape) <= 2 else None
    right = (k,) if rng.random() < 0.25 else (k, int(rng.integers(1, 4)))
    if rng.random() < 0.3 and len(shape) >= 2:
        right = shape[:-2][rng.integers(0, len(shape) - 1):] + right if len(right) == 2 else right
    other = b.pick(lambda s: s == right) if rng.random() < 0.3 else None
    other = other or b.new_input(right)
    return f"{a} @ {other}" if rng.random() < 0.8 else f"np.matmul({a}, {other})"


def _linear(b):
    a = b.pick(lambda s: len(s) >= 1)
    if a is None:
        return None
    k, n = b.shapes[a][-1], int(b.rng.integers(1, 4))
    weight = b.new_input((n, k))
    if b.rng.random() < 0.3:
        return f"ops.Linear.apply({a}, {weight})"
    return f"ops.Linear.apply({a}, {weight}, {b.new_input((n,))})"


def _misc(b):
    a = b.pick()
    shape, rng = b.shapes[a], b.rng
    choice = rng.integers(5)
    if choice == 0:
        # keeps the dtype: in float64 no change, in float32 a cast up and back down
        return f"ops.Cast.apply({a}, dtype={a}.dtype)" if rng.random() < 0.5 else \
            f"{a}.double().to({a}.dtype)"
    if choice == 1 and shape:
        m = int(rng.integers(1, 5))
        index = rng.integers(0, m, size=shape[0])
        return (f"ops.IndexAdd.apply({a}, index={literal(index)}, shape={(m,) + shape[1:]}, "
                f"advanced=True)")
    if choice == 2:
        keep = (rng.random(shape) < 0.7) * 1.5
        return f"ops.DropoutMask.apply({a}, keep={literal(keep)})"
    # (ops.Dropout draws its mask: a mask from a comparison after it would change shape
    # between the build and the check; DropoutMask, its parent, has the same backward)
    return f"{a}.astype(np.float64).astype({a}.dtype)" if rng.random() < 0.2 else None


def _no_gradient(b):
    """Ops whose results have no gradient, used where the gradient flows around them."""
    a = b.pick()
    shape, rng = b.shapes[a], b.rng
    choice = rng.integers(4)
    if choice == 0 and shape:
        return f"{a} * {a}.flatten()[{a}.argmax()]"
    if choice == 1:
        return f"{a} * Tensor.randn(*{a}.shape, dtype={a}.dtype)"
    if choice == 2:
        return f"{a} * Tensor.rand(*{a}.shape, dtype={a}.dtype)"
    if shape:
        return f"{a}[Tensor.randint(0, {shape[0]}, ({int(rng.integers(1, 5))},))]"
    return None


def _loss(b):
    rng = b.rng
    choice = rng.integers(3)
    if choice == 0:
        a = b.pick(lambda s: len(s) == 2)
        if a is None:
            return None
        m, c = b.shapes[a]
        targets = rng.integers(0, c, size=m)
        reduction = str(rng.choice(["mean", "sum", "none"]))
        smoothing = float(rng.choice([0.0, 0.0, 0.1, 0.5]))
        return (f"nn.cross_entropy({a}, {literal(targets)}, reduction={reduction!r}, "
                f"label_smoothing={smoothing})")
    a = b.pick()
    target = literal(np.round(rng.uniform(size=b.shapes[a]), 3))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    if choice == 1:
        return f"nn.mse_loss({a}, {target}, reduction={reduction!r})"
    # probabilities kept inside (0.27, 0.73): a saturated sigmoid is flat in float64
    return f"nn.binary_cross_entropy({a}.tanh().sigmoid(), {target}, reduction={reduction!r})"


def _image(b):
    """An NCHW value: one made so far (3-d ones are unbatched), or a new input."""
    a = b.pick(lambda s: len(s) == 4 or (len(s) == 3 and min(s) >= 2))
    if a is None or b.rng.random() < 0.3:
        rng = b.rng
        a = b.new_input((int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                         int(rng.integers(3, 7)), int(rng.integers(3, 7))))
    return a


def _conv(b):
    """conv2d, the pools and batch norm with random options (invalid ones are skipped by
    add_line), and the ops only their gradients reach, called directly."""
    rng = b.rng
    a = _image(b)
    shape = b.shapes[a]
    c, (h, w) = shape[-3], shape[-2:]
    choice = rng.integers(8)
    if choice <= 1:
        groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
        out = groups * int(rng.integers(1, 3))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        weight = b.new_input((out, c // groups) + k)
        bias = f", {b.new_input((out,))}" if rng.random() < 0.6 else ""
        options = (f"stride={int(rng.integers(1, 3))}, padding={int(rng.integers(0, 2))}, "
                   f"dilation={int(rng.integers(1, 3))}, groups={groups}")
        return f"{a}.conv2d({weight}{bias}, {options})"
    if choice <= 3:
        kind = "max" if choice == 2 else "avg"
        k = int(rng.integers(1, 4))
        stride = int(rng.integers(1, 3)) if rng.random() < 0.5 else None
        return f"{a}.{kind}_pool2d({k}, stride={stride}, padding={int(rng.integers(0, k // 2 + 1))})"
    if choice == 4 and len(shape) == 4:
        training = bool(rng.random() < 0.7)
        return (f"ops.BatchNorm.apply({a}, {b.new_input((c,))}, {b.new_input((c,))}, "
                f"Tensor(np.zeros({c})), Tensor(np.ones({c})), axes=(0, 2, 3), "
                f"training={training})")
    if len(shape) != 4:
        return None
    n = shape[0]
    geometry = "ops.Geometry((2, 2), (1, 1), (0, 0))"
    if choice == 5:                       # a transposed convolution: (n, c, h, w) -> bigger
        weight = b.new_input((c, 2, 2, 2))
        return (f"ops.ConvInputGrad.apply({a}, {weight}, geometry={geometry}, "
                f"input_shape=({n}, 2, {h + 1}, {w + 1}))")
    if choice == 6 and h > 1 and w > 1:
        gz = b.new_input((n, 3, h - 1, w - 1))
        return (f"ops.ConvWeightGrad.apply({a}, {gz}, geometry={geometry}, "
                f"weight_shape=(3, {c}, 2, 2))")
    choices = literal(rng.integers(0, 4, size=shape))
    kind = ["WindowScatter", "AvgPoolScatter", "WindowGather"][int(rng.integers(3))]
    if kind == "WindowGather":
        return f"ops.WindowGather.apply({a}, choice={choices}[:, :, :-1, :-1], geometry={geometry})"
    extra = f"choice={choices}, " if kind == "WindowScatter" else ""
    return (f"ops.{kind}.apply({a}, {extra}geometry={geometry}, "
            f"input_shape=({n}, {c}, {h + 1}, {w + 1}))")


def _sequence(b):
    """What sequence models use: layer norm over the last axes (a row of one value is
    constant: skipped), an embedding table read at random indices (repeats add up), and an
    LSTM step's gates (pre-activations 4H wide, a new cell state)."""
    rng = b.rng
    kind = rng.random()
    if kind < 0.25:
        a = b.pick(lambda s: len(s) >= 1 and s[-1] % 4 == 0)
        if a is None:
            return None
        shape = b.shapes[a]
        c = b.new_input(shape[:-1] + (shape[-1] // 4,))
        return f"ops.LSTMCell.apply({a}, {c})"
    if kind < 0.6:
        a = b.pick(lambda s: len(s) >= 1 and s[-1] >= 2)
        if a is None:
            return None
        shape = b.shapes[a]
        dims = int(rng.integers(1, min(len(shape), 2) + 1))
        weight, bias = b.new_input(shape[-dims:]), b.new_input(shape[-dims:])
        return f"ops.LayerNorm.apply({a}, {weight}, {bias}, dims={dims})"
    a = b.pick(lambda s: len(s) == 2)
    if a is None:
        return None
    rows = b.shapes[a][0]
    index = rng.integers(0, rows, size=tuple(int(n) for n in rng.integers(1, 4, size=2)))
    return f"ops.Embedding.apply({a}, Tensor({literal(index)}))"


_binary_ops = [_binary("+"), _binary("-"), _binary("*")]
OPS = _binary_ops + [_divide, _reverse, _power, _extremum, _unary, _unary, _softmax,
                     _reduction, _reduction, _shape, _getitem, _getitem, _join, _broadcast,
                     _where, _matmul, _linear, _misc, _loss, _no_gradient, _conv, _sequence]


def build(seed, max_lines=6):
    """The program of this seed (None in the rare case that nothing valid came out)."""
    return Builder(np.random.default_rng(seed), max_lines).build()


def shrink(program, fails):
    """Delete lines while the program still runs and `fails(program)` stays true: the
    smallest failing program."""
    changed = True
    while changed:
        changed = False
        candidates = ([program.without(k) for k in reversed(range(len(program.lines)))] +
                      [program.without_output(k) for k in range(len(program.outputs))])
        for candidate in candidates:
            if candidate is not None and candidate.runs() and fails(candidate):
                program, changed = candidate, True
                break
    return program
