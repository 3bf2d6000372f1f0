"""Gradient checking: autograd against central finite differences, in float64.

The check always runs in float64: inputs of any floating dtype are copied to float64 first, so
the default tolerances are float64's. With eps = 1e-6 the central difference is exact to about
1e-10 for smooth functions of moderate curvature, so atol = 1e-5 and rtol = 1e-3 leave a wide
margin and still catch a wrong factor or a wrong element. (Were one to check in float32, the
rounding of f itself, about 1e-7 relative, divided by eps would call for eps near 1e-3 and
tolerances near 1e-2.)
"""

import numpy as np

from .engine import Tensor, enable_grad, get_rng, grad, no_grad


class GradcheckError(AssertionError):
    """Autograd and finite differences disagree; the message names the input, the output
    element and the input element, with both values."""


class NotDifferentiableError(GradcheckError):
    """f has a kink at the element checked (relu or abs at 0, a max tie, a clip bound): its
    left and right differences disagree, so no gradient can match there."""


def _float64_copies(inputs, requires_grad=None):
    copies = []
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"gradcheck: input {i} is a {type(t).__name__}, not a Tensor")
        if t.dtype.kind == "f":
            wants = t.requires_grad if requires_grad is None else requires_grad[i]
            copies.append(Tensor(t.data.astype(np.float64), requires_grad=wants, dtype=np.float64))
        else:
            copies.append(t)
    return copies


def replaying(f):
    """f, with the random generators (the library's and NumPy's global one) put back before
    every call: an f that draws random numbers, such as Dropout in training mode, sees the
    same draws at every evaluation, so its finite differences are differences of one function."""
    state, legacy = get_rng().bit_generator.state, np.random.get_state()

    def call(*xs):
        get_rng().bit_generator.state = state
        np.random.set_state(legacy)
        out = f(*xs)
        return out if isinstance(out, Tensor) else Tensor(out, dtype=np.float64)
    return call


def perturbed(f, copies, t, index, delta):
    """f's output data with element `index` of input tensor t moved by delta."""
    original = t.data[index]
    t.data[index] = original + delta
    try:
        with no_grad():
            return np.array(f(*copies).data, dtype=np.float64)
    finally:
        t.data[index] = original


def numerical_grad(f, inputs, eps=1e-6):
    """Central differences (f(x+eps) - f(x-eps)) / 2eps of scalar f(*inputs) with respect to
    every element of every floating-point input (any memory layout), computed in float64.
    Returns one array per input (None for integer inputs such as indices)."""
    f = replaying(f)
    copies = _float64_copies(inputs)
    first = f(*copies)
    if first.size != 1:
        raise ValueError(f"numerical_grad: f must return one element, got shape {first.shape}")
    return [None if t.dtype.kind != "f" else _numerical_jacobian(f, copies, t, eps)
            .reshape(t.shape) for t in copies]


def _numerical_jacobian(f, copies, t, eps, centre=None):
    """(output size, *t.shape): d output / d t by central differences, element by element.
    With `centre` (f's output at the unperturbed inputs) also the largest jump between the
    left and the right one-sided differences, per element: 0 where f is smooth."""
    size = f(*copies).size if centre is None else centre.size
    jac, jump = np.empty((size,) + t.shape), np.zeros(t.shape)
    for index in np.ndindex(t.shape):        # the array's own index: any memory layout
        plus = perturbed(f, copies, t, index, eps).reshape(-1)
        minus = perturbed(f, copies, t, index, -eps).reshape(-1)
        jac[(slice(None),) + index] = (plus - minus) / (2 * eps)
        if centre is not None:
            jump[index] = _kink_size(f, copies, t, index, eps, centre, plus, minus)
    return (jac, jump) if centre is not None else jac


def _kink_size(f, copies, t, index, eps, centre, plus, minus):
    """How far the left and right one-sided differences at `index` disagree beyond what
    smoothness explains: 0 where f is smooth.

    Where f is smooth, left - right is about eps * f'' (plus rounding), so it halves when the
    step halves, however large the curvature (1e4 * x**2 at 0); at a kink it is the jump of
    the slope whatever the step. An element whose gap is above the rounding margin is measured
    again with eps / 2, and counts as a kink only where the gap did not shrink."""
    left, right = (centre - minus) / eps, (plus - centre) / eps
    gap = np.abs(left - right)
    excess = gap - 1e3 * eps * (1 + np.abs(left) + np.abs(right))
    if not excess.size or excess.max() <= 0:
        return 0.0
    half = eps / 2
    left_half = (centre - perturbed(f, copies, t, index, -half).reshape(-1)) / half
    right_half = (perturbed(f, copies, t, index, half).reshape(-1) - centre) / half
    kink = np.abs(left_half - right_half) > 0.75 * gap      # did not shrink with the step
    return float(np.where(kink, excess, 0.0).max(initial=0.0).clip(0.0))


def _analytical_jacobian(out, wanted):
    """[(output size, *x.shape)] for each wanted input, one backward per output element."""
    jacs = [np.zeros((out.size,) + x.shape) for x in wanted]
    if not out.requires_grad:
        return jacs                                     # f does not depend on its inputs
    for k in range(out.size):
        seed = np.zeros(out.size)
        seed[k] = 1
        gs = grad(out, wanted, grad_outputs=seed.reshape(out.shape), retain_graph=True,
                  allow_unused=True)
        for jac, g in zip(jacs, gs):
            if g is not None:
                jac[k] = g.data
    return jacs


def _kink(f, copies, t, index, eps):
    """(output element, left derivative, right derivative) where the one-sided differences at
    input element `index` disagree most."""
    centre = perturbed(f, copies, t, index, 0.0).reshape(-1)
    left = (centre - perturbed(f, copies, t, index, -eps).reshape(-1)) / eps
    right = (perturbed(f, copies, t, index, eps).reshape(-1) - centre) / eps
    k = int(np.argmax(np.abs(left - right)))
    return k, left[k], right[k]


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=False, seed=0,
              raise_exception=True):
    """Compare autograd's derivatives of f(*inputs) with central finite differences, in
    float64, for every input that requires grad (every floating-point input if none does).

    f may return any shape: every output element is checked against every input element (the
    full Jacobian, one backward per output element), or with fast_mode one random projection
    v.J.u per input (u and v drawn from `seed`), at the cost of one backward and two
    evaluations of f whatever the sizes. Elementwise the test is |a - n| <= atol + rtol*|n|.
    f that draws random numbers (Dropout in training mode) is evaluated with the same draws
    every time. Returns True, or raises GradcheckError naming the input, the input element,
    the output element and both values; NotDifferentiableError where f has a kink at the
    element (left and right differences disagree: relu or abs at 0, a max tie, a clip bound).
    With raise_exception=False a disagreement returns False instead.
    """
    try:
        return _gradcheck(f, inputs, eps, atol, rtol, fast_mode, seed)
    except GradcheckError:
        if raise_exception:
            raise
        return False


def _gradcheck(f, inputs, eps, atol, rtol, fast_mode, seed):
    f = replaying(f)
    floats = [isinstance(t, Tensor) and t.dtype.kind == "f" for t in inputs]
    checked = [fl and t.requires_grad for fl, t in zip(floats, inputs)]
    if not any(checked):
        checked = floats
    copies = _float64_copies(inputs, requires_grad=checked)
    wanted = [(i, t) for i, (t, want) in enumerate(zip(copies, checked)) if want]
    out = f(*copies)
    if fast_mode:
        _check_projections(f, copies, out, wanted, eps, atol, rtol, seed)
        return True
    analytic = _analytical_jacobian(out, [t for _, t in wanted])
    centre = np.array(out.data, dtype=np.float64).reshape(-1)
    for (i, t), a in zip(wanted, analytic):
        n, jump = _numerical_jacobian(f, copies, t, eps, centre)
        where = f"input {i} (shape {t.shape})"

        def output_element(k):
            return "" if out.size == 1 else \
                f" for output element {tuple(int(e) for e in np.unravel_index(k, out.shape))}"
        if jump.size and jump.max() > 0:
            element = tuple(int(e) for e in np.unravel_index(np.argmax(jump), jump.shape))
            k, left, right = _kink(f, copies, t, element, eps)
            raise NotDifferentiableError(
                f"gradcheck: f is not differentiable at element {element} of {where}"
                f"{output_element(k)}: left derivative {left:.6g}, right derivative "
                f"{right:.6g} (a kink: relu or abs at 0, a max tie, a clip bound); check away "
                f"from it")
        excess = np.abs(a - n) - (atol + rtol * np.abs(n))
        if not excess.size or (np.nanmax(excess) <= 0 and not np.isnan(excess).any()):
            continue
        k, *element = np.unravel_index(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)),
                                       excess.shape)
        element = tuple(int(e) for e in element)
        av, nv = a[(k,) + element], n[(k,) + element]
        note = " (autograd gave no gradient)" if not out.requires_grad else ""
        raise GradcheckError(
            f"gradcheck: {where} disagrees at element {element}{output_element(k)}: autograd "
            f"{av:.10g} vs finite differences {nv:.10g}, abs error {abs(av - nv):.3g}, rel "
            f"error {abs(av - nv) / max(abs(nv), 1e-300):.3g}{note}")
    return True


def _check_projections(f, copies, out, wanted, eps, atol, rtol, seed):
    """fast_mode: for each input, v.J.u by autograd (one backward) against the directional
    difference (v.f(x + eps u) - v.f(x - eps u)) / 2eps."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=out.shape)
    gs = grad(out, [t for _, t in wanted], grad_outputs=v, retain_graph=True,
              allow_unused=True) if out.requires_grad else [None] * len(wanted)
    for (i, t), g in zip(wanted, gs):
        u = rng.normal(size=t.shape)
        analytic = 0.0 if g is None else float((g.data * u).sum())
        original = t.data.copy()
        values = []
        for sign in (1, -1):
            t.data[...] = original + sign * eps * u
            with no_grad():
                values.append(float((f(*copies).data * v).sum()))
        t.data[...] = original
        numeric = (values[0] - values[1]) / (2 * eps)
        if abs(analytic - numeric) > atol + rtol * abs(numeric):
            raise GradcheckError(
                f"gradcheck (fast mode): input {i} (shape {t.shape}): the random projection "
                f"v.J.u is {analytic:.10g} by autograd and {numeric:.10g} by finite "
                f"differences (abs error {abs(analytic - numeric):.3g}); run without fast_mode "
                f"to find the element")


def gradgradcheck(f, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0,
                  raise_exception=True):
    """Second derivatives of f against finite differences of its first derivatives, in
    float64: gradcheck of sum_i w_i . grad(f, inputs, grad_outputs, create_graph=True)_i for
    fixed random weights w (and, when f's output has more than one element and no
    grad_outputs are given, fixed random grad_outputs). It catches an op whose first
    derivative is right but whose backward is not differentiable correctly."""
    rng = np.random.default_rng(seed)
    weights = {}

    def first_derivatives(*xs):
        with enable_grad():                        # finite differences run under no_grad
            out = f(*xs)
            upstream = grad_outputs
            if upstream is None and out.size != 1:
                upstream = weights.setdefault("out", rng.normal(size=out.shape))
            wanted = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
            gs = grad(out, wanted, grad_outputs=upstream, create_graph=True, allow_unused=True)
            total = Tensor(0.0, dtype=np.float64)
            for i, g in enumerate(gs):
                if g is not None:
                    w = weights.setdefault(i, rng.normal(size=g.shape))
                    total = total + (g * w).sum()
            return total

    floats = [isinstance(t, Tensor) and t.dtype.kind == "f" for t in inputs]
    wanted = [fl and t.requires_grad for fl, t in zip(floats, inputs)]
    copies = _float64_copies(inputs, requires_grad=wanted if any(wanted) else floats)
    return gradcheck(first_derivatives, copies, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)


# ---------------------------------------------------------------- a user's op, checked in one call

def check_op(op, *inputs, options=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0,
             second_order=True, examples=3):
    """Every check the op table runs on the built-in ops, on a user's Op class: gradients by
    finite differences, gradients of gradients (second_order), the jvp against finite
    differences, against reverse mode through the transpose identity and jacfwd against jacrev,
    and vmap against a loop over `examples` examples. `inputs` are input shapes (random normal
    values, float64) or arrays; `options` the op's keyword options. Returns {check: "ok" or
    why it was skipped}; a check that fails raises GradcheckError naming the op and what
    differs, by how much."""
    from . import func
    options = options or {}
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=x) if isinstance(x, tuple) else np.asarray(x, dtype=np.float64)
              for x in inputs]

    def tensors(requires_grad):
        return [Tensor(a, requires_grad=requires_grad, dtype=np.float64) for a in arrays]

    def f(*ts):
        return op.apply(*ts, **options)
    name = op.name
    out = f(*tensors(False))
    weights = rng.normal(size=out.shape)

    def scalar(*ts):
        return (f(*ts) * Tensor(weights, dtype=np.float64)).sum()
    report = {}
    for check, run in (("gradients by finite differences", lambda: gradcheck(
                            scalar, tensors(True), eps=eps, atol=atol, rtol=rtol)),
                       ("gradients of gradients", lambda: gradgradcheck(
                            scalar, tensors(True), eps=eps, atol=atol, rtol=rtol)
                        if second_order else None)):
        if check == "gradients of gradients" and not second_order:
            report[check] = "skipped (second_order=False)"
            continue
        try:
            run()
        except GradcheckError as error:
            raise GradcheckError(f"check_op: {name}'s {check} differ: {error}") from None
        report[check] = "ok"

    tangents = [rng.normal(size=a.shape) for a in arrays]
    _, jv = func.jvp(f, tuple(tensors(False)), tuple(Tensor(t, dtype=np.float64)
                                                    for t in tangents))
    plus = f(*[Tensor(a + eps * t, dtype=np.float64) for a, t in zip(arrays, tangents)]).data
    minus = f(*[Tensor(a - eps * t, dtype=np.float64) for a, t in zip(arrays, tangents)]).data
    _close(name, "jvp against finite differences", jv.data, (plus - minus) / (2 * eps),
           atol, rtol)
    report["jvp against finite differences"] = "ok"
    u = rng.normal(size=out.shape)
    _, pull = func.vjp(f, *tensors(False))
    reverse = sum(float((g.data * t).sum()) for g, t in zip(pull(Tensor(u, dtype=np.float64)),
                                                            tangents))
    _close(name, "jvp against reverse mode (<u, J v> = <J^T u, v>)",
           np.array(float((u * jv.data).sum())), np.array(reverse), 1e-9, 1e-7)
    report["jvp against reverse mode"] = "ok"
    for k in range(len(arrays)):
        by_forward = func.jacfwd(f, argnums=k)(*tensors(False))
        by_reverse = func.jacrev(f, argnums=k)(*tensors(False))
        _close(name, f"jacfwd against jacrev (input {k})", by_forward.data, by_reverse.data,
               1e-9, 1e-7)
    report["jacfwd against jacrev"] = "ok"

    if op.batch is None:
        report["vmap against a loop"] = "skipped (no batching rule: vmap refuses the op)"
        return report
    batch = [rng.normal(size=(examples,) + a.shape) for a in arrays]
    mapped = func.vmap(f)(*[Tensor(b, dtype=np.float64) for b in batch]).data
    loop = np.stack([f(*[Tensor(b[i], dtype=np.float64) for b in batch]).data
                     for i in range(examples)])
    _close(name, "vmap against a loop over examples", mapped, loop, 1e-10, 1e-10)
    report["vmap against a loop"] = "ok"
    return report


def _close(name, check, got, expected, atol, rtol):
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        raise GradcheckError(f"check_op: {name}'s {check}: shape {got.shape}, expected "
                             f"{expected.shape}")
    error = np.abs(got - expected)
    bound = atol + rtol * np.abs(expected)
    if (error > bound).any():
        worst = np.unravel_index(int(np.argmax(error - bound)), error.shape) if error.ndim \
            else ()
        raise GradcheckError(f"check_op: {name}'s {check} differ: at {worst} "
                             f"{got[worst]:.6g} against {expected[worst]:.6g} (difference "
                             f"{error[worst]:.3g})")
