"""See backprop happen: one self-contained HTML file of a graph, with module boxes that expand
and collapse, each node's statistics on hover or click, and a stepper that replays the engine's
own backward pass one op at a time.

The drawings are draw_graph's, rendered to SVG here and inlined; the script and style are
inline too, so the file opens from disk with no network and no server. The backward pass is
run once on the retained graph (grad(), which touches no .grad) while an observer of the
engine writes down each step in the engine's own order: the gradient each op received and
passed to each input, and each leaf's completed gradient.
"""
import html
import itertools
import json

import numpy as np

from ..engine import Observer, grad, observe, sum_to_shape, topo_order
from .drawing import collapsible_paths, draw_graph, parameter_names, write_file

MAX_VARIANTS_MODULES = 4     # up to this many module boxes, each expands and collapses alone


def _summary(array):
    """What the page shows of an array: the value for one element, else shape and statistics."""
    if array is None:
        return None
    if np.asarray(array).dtype.kind in "iub" and np.asarray(array).size > 1:
        values = np.asarray(array).ravel()        # labels or indices: values, not a norm
        return {"shape": list(np.shape(array)),
                "values": [int(v) for v in values[:8]], "more": bool(values.size > 8)}
    a = np.asarray(array, dtype=np.float64)
    if a.size == 1:
        return {"value": float(a.reshape(-1)[0])}
    if a.size == 0:
        return {"shape": list(a.shape)}
    return {"shape": list(a.shape), "min": float(a.min()), "max": float(a.max()),
            "mean": float(a.mean()), "norm": float(np.linalg.norm(a))}


class _Steps(Observer):
    """Each backward step as the engine takes it: (op or leaf, gradient, gradients passed on)."""

    def __init__(self):
        self.steps = []

    def on_backward(self, op, grad_output, grad_inputs):
        self.steps.append((op, grad_output, grad_inputs))

    def on_gradient(self, tensor, grad):
        self.steps.append((tensor, grad, None))


def _trace(tensor, nodes):
    """[(node, received gradient, [(parent, contribution)])] in the engine's backward order."""
    if tensor.size != 1:
        raise ValueError(f"explore: the backward stepper needs a one-element output, got shape "
                         f"{tensor.shape}")
    made_by = {id(n.op): n for n in nodes if n.op is not None}
    leaves = [n for n in nodes if n.is_leaf and n.requires_grad]
    with observe(_Steps()) as steps:
        grad(tensor, leaves, retain_graph=True, allow_unused=True)
    events = []
    for what, g, grads in steps.steps:
        if grads is None:                                 # a leaf's gradient is complete
            events.append((what, g, []))
            continue
        events.append((made_by[id(what)], g, [
            (p, None if pg is None else sum_to_shape(np.asarray(pg), p.shape))
            for p, pg in zip(what.inputs, grads) if p.requires_grad]))
    return events


def page_data(tensor, names, title):
    nodes = topo_order(tensor, constants=True)
    index = {id(n): i for i, n in enumerate(nodes)}
    labels = parameter_names(nodes, names)
    expanded = draw_graph(tensor, names=names)
    paths = expanded.module_paths
    collapsible = collapsible_paths(paths)

    # one SVG per set of collapsed boxes: every subset for a few boxes, else none and all
    if len(collapsible) <= MAX_VARIANTS_MODULES:
        subsets = [c for r in range(len(collapsible) + 1)
                   for c in itertools.combinations(collapsible, r)]
    else:
        subsets = [(), tuple(collapsible)]
    svgs = {}
    for subset in subsets:
        graph = expanded if not subset else draw_graph(
            tensor, names=names, collapse_modules=[paths[k][-1] for k in subset])
        svgs[",".join(map(str, subset))] = _inline_svg(graph.render_bytes("svg").decode())

    events, running, counts = [], {}, {}
    trace = _trace(tensor, nodes)
    for _, _, contributions in trace:
        for parent, _ in contributions:
            counts[id(parent)] = counts.get(id(parent), 0) + 1
    received, arrived = {}, {}          # gradient each node got; contributions counted
    for node, g, contributions in trace:
        received[id(node)] = g
        sent = []
        for parent, pg in contributions:
            if pg is None:
                continue
            total = running.get(id(parent))
            running[id(parent)] = pg if total is None else total + pg
            arrived[id(parent)] = arrived.get(id(parent), 0) + 1
            sent.append({"node": index[id(parent)], "grad": _summary(pg),
                         "k": arrived[id(parent)],
                         "of": counts[id(parent)], "sum": _summary(running[id(parent)])})
        events.append({"node": index[id(node)], "op": None if node.op is None else
                       node.op.name, "grad": _summary(g), "to": sent})

    kinds = {}
    for n in nodes:
        kinds[id(n)] = ("output" if n is tensor else "op" if n.op is not None else
                        "parameter" if n.requires_grad else "input")
    node_data = [{"id": i, "name": labels.get(id(n), ""), "kind": kinds[id(n)],
                  "op": None if n.op is None else n.op.name, "shape": list(n.shape),
                  "dtype": str(n.dtype), "value": _summary(n.data),
                  "grad": _summary(received.get(id(n))),
                  "boxes": [paths.index(expanded.node_paths[i][:d + 1])
                            for d in range(len(expanded.node_paths[i]))]}
                 for i, n in enumerate(nodes)]
    modules = [{"k": k, "label": repr(paths[k][-1])} for k in collapsible]
    return {"title": title, "nodes": node_data, "events": events, "svgs": svgs,
            "modules": modules, "all_variants": len(collapsible) <= MAX_VARIANTS_MODULES}


def _inline_svg(svg):
    """An SVG document as an element to put in a page: no XML header, no DOCTYPE."""
    start = svg.index("<svg")
    return svg[start:]


def explore(tensor, path, names=None, title=None):
    """Write one self-contained HTML file of the graph that produced `tensor` (a one-element
    output, such as a loss): module boxes that expand and collapse, with a depth control; each
    node's name, shape, dtype and value and gradient statistics on hover or click; and a
    backward stepper (first, previous, play, next, last and a slider) that replays the engine's
    own backward order one op at a time, showing the gradient each op passes to each input and,
    at a node used more than once, each contribution and their running sum. Returns the path
    written (with .html added unless it has it)."""
    if tensor.graph_freed:
        raise RuntimeError("explore: backward() already freed the graph behind this tensor; "
                           "explore before backward(), or call backward(retain_graph=True)")
    data = page_data(tensor, names, title or "tinygrad_mnist graph explorer")
    page = _PAGE.replace("__TITLE__", html.escape(data["title"])).replace(
        "__DATA__", json.dumps(data).replace("</", "<\\/"))
    path = str(path) if str(path).lower().endswith(".html") else f"{path}.html"
    write_file(path, page.encode())
    return path


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #222; }
header { padding: 8px 12px; background: #f1f3f5; border-bottom: 1px solid #ccc; }
header h1 { font-size: 16px; margin: 0 0 6px 0; }
#controls button { font-size: 14px; margin-right: 2px; }
#controls input[type=range] { width: 260px; vertical-align: middle; }
#main { display: flex; align-items: flex-start; }
#graph { flex: 1 1 auto; overflow: auto; padding: 8px; max-height: calc(100vh - 90px); }
#side { flex: 0 0 360px; padding: 8px 12px; font-size: 13px; border-left: 1px solid #ddd;
        max-height: calc(100vh - 90px); overflow: auto; }
#side h2 { font-size: 14px; margin: 10px 0 4px 0; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; }
.node, .cluster { cursor: pointer; }
#graph g.cluster path, #graph g.cluster polygon { pointer-events: all; }   /* the inside too */
.hl-op polygon, .hl-op ellipse, .hl-op path { stroke: #d6336c !important; stroke-width: 3px !important; }
.hl-to polygon, .hl-to ellipse { stroke: #f08c00 !important; stroke-width: 3px !important; }
.hl-sel polygon, .hl-sel ellipse { stroke: #1c7ed6 !important; stroke-width: 3px !important; }
.muted { color: #888; }
.sum { font-weight: bold; }
</style></head>
<body>
<header><h1>__TITLE__</h1>
<div id="controls">
<button id="first" title="before backward">first</button>
<button id="prev" title="previous op">prev</button>
<button id="play" title="play">play</button>
<button id="next" title="next op">next</button>
<button id="last" title="backward done">last</button>
<input type="range" id="slider" min="0" value="0">
<span id="step-label"></span>
<label style="margin-left:16px">modules <select id="depth">
<option value="expanded">expanded</option><option value="collapsed">collapsed</option>
</select></label>
<span class="muted" style="margin-left:8px">click a module box to collapse or expand it;
hover or click a node for its numbers</span>
</div></header>
<div id="main"><div id="graph"></div>
<div id="side"><h2>Backward step</h2><div id="step-info"></div>
<h2>Node</h2><div id="node-info" class="muted">hover or click a node</div>
<h2>Gradients of the leaves so far</h2><table id="leaf-grads"></table></div></div>
<script>
"use strict";
const DATA = __DATA__;
const N = DATA.events.length;
let step = 0, collapsed = new Set(), timer = null, selected = null;

function fmt(x) {
  // six significant digits, trailing zeros of the mantissa dropped; the exponent as it is
  const v = Number(x);
  if (!Number.isFinite(v)) return String(v);                 // NaN, Infinity, -Infinity
  if (Number.isInteger(v) && Math.abs(v) < 1e21) return String(v);
  const [mantissa, exponent] = v.toPrecision(6).split("e");
  const short = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
  return exponent === undefined ? short : short + "e" + exponent;
}
function shape(sh) { return "(" + sh.join(", ") + (sh.length === 1 ? ",)" : ")"); }
function show(s) {
  if (!s) return "none";
  if ("value" in s) return fmt(s.value);
  if ("values" in s) return shape(s.shape) + " values " + s.values.join(", ") +
                            (s.more ? ", ..." : "");
  if (!("norm" in s)) return "shape " + shape(s.shape);
  return shape(s.shape) + " min " + fmt(s.min) + ", max " + fmt(s.max) +
         ", mean " + fmt(s.mean) + ", norm " + fmt(s.norm);
}
function label(i) {
  const n = DATA.nodes[i];
  return n.name ? n.name : n.op ? n.op + " output" : n.kind;
}
function variantKey() {
  const ks = DATA.modules.map(m => m.k).filter(k => collapsed.has(k));
  return ks.join(",");
}
function elementFor(i, suffix) {
  const n = DATA.nodes[i];
  for (const k of n.boxes) if (collapsed.has(k)) return findNode("m" + k);
  return findNode("t" + i + (suffix || ""));
}
function findNode(id) {
  for (const g of document.querySelectorAll("#graph g.node")) {
    const t = g.querySelector("title");
    if (t && t.textContent === id) return g;
  }
  return null;
}
function render() {
  let key = variantKey();
  if (!(key in DATA.svgs)) {                           // many boxes: all or none
    const all = DATA.modules.map(m => m.k);
    if (collapsed.size) all.forEach(k => collapsed.add(k)); else collapsed.clear();
    key = variantKey();
  }
  document.getElementById("graph").innerHTML = DATA.svgs[key];
  for (const g of document.querySelectorAll("#graph g.node")) {
    const id = g.querySelector("title").textContent;
    const m = /^t(\d+)(op)?$/.exec(id);
    if (m) {
      const i = Number(m[1]);
      g.addEventListener("mouseenter", () => nodeInfo(i));
      g.addEventListener("click", ev => { selected = i; nodeInfo(i); highlight(); ev.stopPropagation(); });
    } else if (/^m\d+$/.test(id)) {
      g.addEventListener("click", ev => { toggle(Number(id.slice(1))); ev.stopPropagation(); });
    }
  }
  for (const g of document.querySelectorAll("#graph g.cluster")) {
    const m = /^cluster_(\d+)$/.exec(g.querySelector("title").textContent);
    if (m && DATA.modules.some(x => x.k === Number(m[1])))
      g.addEventListener("click", () => toggle(Number(m[1])));
  }
  document.getElementById("depth").value = collapsed.size ? "collapsed" : "expanded";
  highlight();
}
function toggle(k) {
  if (!DATA.all_variants) {
    if (collapsed.size) collapsed.clear(); else DATA.modules.forEach(m => collapsed.add(m.k));
  } else if (collapsed.has(k)) collapsed.delete(k); else collapsed.add(k);
  render();
}
function gradSoFar(i) {
  let sum = null;
  for (let e = 0; e < step; e++)
    for (const t of DATA.events[e].to) if (t.node === i) sum = t.sum;
  if (DATA.nodes[i].kind === "output" && step > 0) sum = DATA.events[0].grad;
  return sum;
}
function nodeInfo(i) {
  const n = DATA.nodes[i];
  document.getElementById("node-info").className = "";
  document.getElementById("node-info").innerHTML =
    "<b>" + label(i) + "</b> (" + n.kind + (n.op ? ", made by " + n.op : "") + ")<br>" +
    "shape " + shape(n.shape) + ", " + n.dtype + "<br>value: " + show(n.value) +
    "<br>gradient at this step: " + show(gradSoFar(i)) +
    "<br>gradient after backward: " + show(n.grad);
}
function highlight(follow) {
  document.querySelectorAll("#graph .hl-op, #graph .hl-to, #graph .hl-sel").forEach(
    g => g.classList.remove("hl-op", "hl-to", "hl-sel"));
  if (selected !== null) { const g = elementFor(selected); if (g) g.classList.add("hl-sel"); }
  if (step > 0) {
    const e = DATA.events[step - 1];
    const g = elementFor(e.node, e.op ? "op" : "");
    if (g) g.classList.add("hl-op");
    for (const t of e.to) { const h = elementFor(t.node); if (h) h.classList.add("hl-to"); }
    if (g && follow) g.scrollIntoView({block: "center", inline: "center"});   // the op that runs
  }
}
function stepInfo() {
  const info = document.getElementById("step-info");
  document.getElementById("step-label").textContent = "step " + step + " of " + N;
  document.getElementById("slider").value = step;
  if (step === 0) { info.innerHTML = "Before backward: press next (or play) to run the engine's " +
    "backward pass one op at a time, in its own order."; return; }
  const e = DATA.events[step - 1];
  let text = e.op
    ? "<b>" + e.op + "</b> (making " + label(e.node) + ") receives the gradient " + show(e.grad) +
      " and passes on:<ul>"
    : "<b>" + label(e.node) + "</b> is a leaf: its gradient is complete, " + show(e.grad) + "<ul>";
  for (const t of e.to) {
    text += "<li>to " + label(t.node) + ": " + show(t.grad);
    if (t.of > 1) text += "<br>contribution " + t.k + " of " + t.of +
                          ", <span class='sum'>sum so far " + show(t.sum) + "</span>";
    text += "</li>";
  }
  info.innerHTML = text + "</ul>";
}
function leafTable() {
  let rows = "<tr><th>leaf</th><th>gradient so far</th></tr>";
  DATA.nodes.forEach((n, i) => {
    if (n.kind !== "parameter") return;
    const g = gradSoFar(i);
    rows += "<tr data-node='" + i + "' data-name='" + label(i) + "' data-grad='" +
            (g ? JSON.stringify(g) : "") + "'><td>" + label(i) + "</td><td>" + show(g) + "</td></tr>";
  });
  document.getElementById("leaf-grads").innerHTML = rows;
}
function go(k) {
  step = Math.max(0, Math.min(N, k));
  stepInfo(); highlight(true); leafTable();
  if (selected !== null) nodeInfo(selected);
}
document.getElementById("slider").max = N;
document.getElementById("first").onclick = () => go(0);
document.getElementById("prev").onclick = () => go(step - 1);
document.getElementById("next").onclick = () => go(step + 1);
document.getElementById("last").onclick = () => go(N);
document.getElementById("slider").oninput = ev => go(Number(ev.target.value));
document.getElementById("play").onclick = () => {
  if (timer) { clearInterval(timer); timer = null; return; }
  if (step >= N) go(0);
  timer = setInterval(() => { if (step >= N) { clearInterval(timer); timer = null; } else go(step + 1); }, 700);
};
document.getElementById("depth").onchange = ev => {
  collapsed.clear();
  if (ev.target.value === "collapsed") DATA.modules.forEach(m => collapsed.add(m.k));
  render();
};
render(); go(0);
</script></body></html>
"""
