"""Arguments checked once, in one place: axes, a single axis, shapes, indices."""
import numpy as np


def axes(op, axis, ndim, shape):
    """An `axis` argument of a reduction: None (every axis), an int or a tuple of ints,
    negative allowed -> None or a sorted tuple."""
    if axis is None:
        return None
    out = [single_axis(op, a, ndim, shape) for a in (axis if isinstance(axis, (tuple, list))
                                                      else (axis,))]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis} for a tensor of shape {shape}")
    return tuple(sorted(out))


def single_axis(op, axis, ndim, shape):
    """A single axis (negative allowed) -> an int in range(ndim); a tuple is a TypeError."""
    if isinstance(axis, (tuple, list)):
        raise TypeError(f"{op}: takes a single int axis, got {axis!r}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor of shape {shape}")
    return int(axis) % ndim


def sizes(op, args):
    """Sizes given as f(2, 3) or f((2, 3)) -> a tuple of ints."""
    values = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in values):
        raise TypeError(f"{op}: sizes must be ints, got {values!r}")
    return tuple(int(n) for n in values)


def is_basic_index(index):
    """Slices, ints, None and Ellipsis only: NumPy gives a view, never repeating an element."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis
               for p in parts)


def pair(op, name, value, minimum):
    """An int or a pair of ints, as a (h, w) pair of ints >= minimum; `op` names the call
    (with its shapes) in an error."""
    given = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2 and
          all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        value = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {given!r}")
    return value
