"""The composition fuzzer's third reference: torch.func, where PyTorch is installed.

A random program is an expression tree over one input (elementwise functions, softmax, a
product with a constant matrix, centring, in-place updates, detach, reshapes), written once
and run twice: on our Tensor with tinygrad_mnist.func, and on torch.Tensor with torch.func,
under the same random stack of up to three transforms (grad, vjp, jvp, jacrev, jacfwd,
hessian, vmap with mapped and shared arguments, functional_call), and for ours also under the
jit. Both sides compute in float64 and must agree.

    python -m pytest tests/test_against_torch_func.py --composition-budget 10000

Without PyTorch the file is skipped; the rest of the suite does not need it.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch_func = pytest.importorskip("torch.func")

from tinygrad_mnist import Tensor, func, jit, nn  # noqa: E402

pytestmark = pytest.mark.slow

TORCH_BUDGET = 150
TRANSFORMS = ["grad", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "vmap", "vmap-shared",
              "functional_call"]
UNARY = ["tanh", "sin", "cos", "sigmoid", "exp", "square", "log1p_square", "sqrt1p_square",
         "softmax", "log_softmax", "matmul", "centre", "reshape", "permute", "detach"]
BINARY = ["add", "mul", "sub", "div", "in-place add", "in-place mul", "concat"]


class Ours:
    """Our library, seen through the few names a program uses."""
    name = "tinygrad_mnist"
    grad, vjp, jvp = func.grad, func.vjp, func.jvp
    jacrev, jacfwd, hessian = func.jacrev, func.jacfwd, func.hessian
    functional_call = func.functional_call

    @staticmethod
    def const(a):
        return Tensor(np.asarray(a, dtype=np.float64), dtype=np.float64)

    @staticmethod
    def vmap(f, in_axes, out_axes):
        return func.vmap(f, in_axes=in_axes, out_axes=out_axes)

    @staticmethod
    def centre(a):
        return a - a.mean(axis=-1, keepdims=True)

    @staticmethod
    def concat(parts, axis):
        return Tensor.concat(parts, axis=axis)

    @staticmethod
    def stack(parts, axis):
        return Tensor.stack(parts, axis=axis)

    @staticmethod
    def module(forward, shape):
        class Scaled(nn.Module):
            def __init__(self):
                self.w = Tensor(np.ones(shape), requires_grad=True, dtype=np.float64)

            def forward(self, x):
                return forward(x * self.w)
        return Scaled()

    @staticmethod
    def numpy(t):
        return t.data


class Torch:
    """torch.func, seen through the same names."""
    name = "torch.func"
    grad, vjp, jvp = torch_func.grad, torch_func.vjp, torch_func.jvp
    jacrev, jacfwd, hessian = torch_func.jacrev, torch_func.jacfwd, torch_func.hessian
    functional_call = torch_func.functional_call

    @staticmethod
    def const(a):
        return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)

    @staticmethod
    def vmap(f, in_axes, out_axes):
        # stacked on axis 0, then moved: torch.func 2.13 fails (or stacks on axis 0) for an
        # output that does not depend on the mapped input and out_dims != 0
        mapped = torch_func.vmap(f, in_dims=in_axes, out_dims=0)
        return lambda *args: torch.movedim(mapped(*args), 0, out_axes)

    @staticmethod
    def centre(a):
        return a - a.mean(-1, keepdim=True)

    @staticmethod
    def concat(parts, axis):
        return torch.cat(parts, dim=axis)

    @staticmethod
    def stack(parts, axis):
        return torch.stack(parts, dim=axis)

    @staticmethod
    def module(forward, shape):
        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(shape, dtype=torch.float64))

            def forward(self, x):
                return forward(x * self.w)
        return Scaled()

    @staticmethod
    def numpy(t):
        return t.detach().numpy(force=True)


# ---------------------------------------------------------------- random programs

def random_tree(rng, depth):
    """An expression tree over the input 'x': ('x',), (unary, child, data) or
    (binary, left, right, data)."""
    if depth == 0 or rng.random() < 0.2:
        return ("x",)
    if rng.random() < 0.6:
        return (UNARY[rng.integers(len(UNARY))], random_tree(rng, depth - 1), rng.integers(1 << 30))
    return (BINARY[rng.integers(len(BINARY))], random_tree(rng, depth - 1),
            random_tree(rng, depth - 1), rng.integers(1 << 30))


def evaluate(tree, lib, x):
    """The tree's value on lib's tensor x; constants come from the node's own seed, so both
    libraries see the same numbers."""
    kind = tree[0]
    if kind == "x":
        return x
    rng = np.random.default_rng(tree[-1])
    if kind in BINARY:
        a, b = evaluate(tree[1], lib, x), evaluate(tree[2], lib, x)
        if kind == "add":
            return a + b
        if kind == "mul":
            return a * b
        if kind == "sub":
            return a - b
        if kind == "div":
            return a / (b * b + 1.0)
        if kind == "concat":                # halves of each, joined back to the shape
            half = a.shape[-1] // 2
            return lib.concat([a[..., :half], b[..., half:]], -1)
        y = a * 1.0                         # a tensor of the program's own, then updated
        if kind == "in-place add":
            y += b
        else:
            y *= b
        return y
    a = evaluate(tree[1], lib, x)
    if kind == "tanh":
        return a.tanh()
    if kind == "sin":
        return a.sin()
    if kind == "cos":
        return a.cos()
    if kind == "sigmoid":
        return a.sigmoid()
    if kind == "exp":
        return (a * 0.3).exp()
    if kind == "square":
        return a * a
    if kind == "log1p_square":
        return (a * a + 1.0).log()
    if kind == "sqrt1p_square":
        return (a * a + 1.0).sqrt()
    if kind == "softmax":
        return a.softmax(-1)
    if kind == "log_softmax":
        return a.log_softmax(-1)
    if kind == "matmul":
        n = a.shape[-1]
        return a @ lib.const(rng.normal(size=(n, n)) / np.sqrt(n))
    if kind == "centre":
        return lib.centre(a)
    if kind == "reshape":
        return a.reshape(-1).reshape(tuple(a.shape)) * 1.5
    if kind == "permute":
        index = lib.const(rng.permutation(a.shape[-1])).long() if lib is Torch else \
            rng.permutation(a.shape[-1])
        return a[..., index]
    if kind == "detach":
        return a * a.detach()
    raise ValueError(kind)


# ---------------------------------------------------------------- transforms

def transformed(lib, kind, g, seed, in_shape, out_shape):
    """kind applied to g (a function of one tensor of in_shape giving out_shape): a function of
    one tensor again, with its output shape."""
    rng = np.random.default_rng(seed)

    def scalar(h, shape):
        weights = lib.const(rng.normal(size=shape))
        return lambda x: (h(x) * weights).sum()

    if kind == "grad":
        return lib.grad(scalar(g, out_shape)), in_shape
    if kind == "hessian":
        return lib.hessian(scalar(g, out_shape)), in_shape + in_shape
    if kind == "jvp":
        v = lib.const(rng.normal(size=in_shape))
        return (lambda x: lib.jvp(g, (x,), (v,))[1]), out_shape
    if kind == "vjp":
        c = lib.const(rng.normal(size=out_shape))
        return (lambda x: lib.vjp(g, x)[1](c)[0]), in_shape
    if kind in ("jacrev", "jacfwd"):
        return getattr(lib, kind)(g), out_shape + in_shape
    if kind == "vmap":                      # three examples made from x, on a random axis
        axis, out_axis = int(rng.integers(len(in_shape) + 1)), int(rng.integers(len(out_shape) + 1))
        shifts = rng.normal(size=(3,) + in_shape) * 0.1

        def mapped(x):
            xs = lib.stack([x + lib.const(s) for s in shifts], axis)
            return lib.vmap(g, axis, out_axis)(xs)
        shape = out_shape[:out_axis] + (3,) + out_shape[out_axis:]
        return mapped, shape
    if kind == "vmap-shared":               # a mapped scale and the input shared by all
        scales = lib.const(1.0 + 0.1 * rng.normal(size=3))
        return (lambda x: lib.vmap(lambda s, y: g(y * s), (0, None), 0)(scales, x)), \
            (3,) + out_shape
    if kind == "functional_call":           # x given as the module's parameter
        module = lib.module(g, in_shape)
        inputs = lib.const(1.0 + 0.1 * rng.normal(size=in_shape))
        return (lambda x: lib.functional_call(module, {"w": x}, (inputs,))), out_shape
    raise ValueError(kind)


def run_program(seed):
    """One random program under one random stack, ours against torch.func."""
    rng = np.random.default_rng(seed)
    in_shape = [(3,), (2, 3), (4,)][rng.integers(3)]
    tree = random_tree(rng, 3)
    depth = int(rng.integers(1, 4))
    stack = [TRANSFORMS[rng.integers(len(TRANSFORMS))] for _ in range(depth)]
    seeds = rng.integers(1 << 30, size=depth)
    use_jit = rng.random() < 0.2
    x = rng.normal(size=in_shape)
    where = f"seed {seed}: {' of '.join(reversed(stack))} of {tree}{' under jit' if use_jit else ''}"

    results = {}
    for lib in (Ours, Torch):
        g, shape = (lambda t, lib=lib: evaluate(tree, lib, t)), in_shape
        for kind, s in zip(stack, seeds):
            g, shape = transformed(lib, kind, g, s, in_shape, shape)
        if lib is Ours and use_jit:
            step = jit(lambda t, g=g: g(t).detach())
            step(lib.const(x * 0.5))                 # traced on other values, then replayed
            out = step(lib.const(x))
            assert step.replays == 1, f"{where}: the jit recorded again instead of replaying"
        elif lib is Torch:
            try:
                out = g(lib.const(x))
            except RuntimeError as error:    # e.g. an in-place update of a zero tangent
                return f"{where}: torch.func refuses ({str(error).splitlines()[0]})"
        else:
            out = g(lib.const(x))
        results[lib.name] = lib.numpy(out)
    ours, theirs = results["tinygrad_mnist"], results["torch.func"]
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape}, torch.func {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9, err_msg=where)
    return where


def pytest_generate_tests(metafunc):
    if "torch_seed" in metafunc.fixturenames:
        budget = metafunc.config.getoption("--composition-budget") or TORCH_BUDGET
        metafunc.parametrize("torch_seed", range(budget))


def test_a_random_stack_equals_torch_func(torch_seed):
    with np.errstate(all="ignore"):
        run_program(torch_seed)


def test_the_comparison_finds_a_planted_bug(monkeypatch):
    """Forward mode made wrong on purpose (a halved tangent) is found within the budget."""
    original = func.jvp

    def halved(f, primals, tangents):
        out, tangent = original(f, primals, tangents)
        return out, tangent * 0.5
    monkeypatch.setattr(Ours, "jvp", staticmethod(halved))
    with pytest.raises(AssertionError):
        for seed in range(TORCH_BUDGET):
            run_program(seed)
