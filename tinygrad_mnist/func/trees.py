"""What the function transforms share: argument trees (tensors in nested dicts, lists and
tuples) and which vmap traces run in this thread."""
import threading

_active = threading.local()


def tree_leaves(tree):
    """The tensors of an argument: itself, or those in a dict, list or tuple (nested)."""
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tree_leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in tree_leaves(v)]
    return [tree]


def tree_rebuild(tree, leaves):
    """`tree` with its tensors replaced, in order, by those of the iterator `leaves`."""
    if isinstance(tree, dict):
        return {k: tree_rebuild(v, leaves) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_rebuild(v, leaves) for v in tree)
    return next(leaves)


def vmap_traces():
    """The vmap traces running in this thread, innermost last."""
    if not hasattr(_active, "traces"):
        _active.traces = []
    return _active.traces


def tracing():
    """The innermost vmap trace running in this thread, or None."""
    traces = vmap_traces()
    return traces[-1] if traces else None
