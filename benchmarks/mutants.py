"""Planted bugs: how many wrong derivatives does the test suite catch?

    python -m benchmarks.mutants [--workers 2] [--only NAME] [--names FILE] [--out benchmarks]

Each mutant is the library with one bug planted in one backward pass or one forward-mode
(jvp) rule of an op (engine/ops.py, conv.py, norm.py, cells.py), in one kernel
(engine/kernels/: the array code of convolution and its algorithms (Winograd, shifted views,
Fourier), pooling, batch norm, the sigmoid and the normal CDF, the BLAS helpers, with their
layouts and strategies; not the plain references the tests check the kernels by) or in the
engine's one helper that undoes broadcasting (graph.py's sum_to_shape):
- a sign flipped: a returned gradient negated, a `-x` made `x`, a `-` made `+`;
- a factor dropped or doubled: `a * b` made `a` or `b`, a returned gradient doubled;
- a transpose lost: `.T`, `.swapaxes(...)`, `.transpose(...)` removed;
- a reduction over the wrong axis: `axis=...` of a sum in a backward made `axis=None`;
- a broadcast not undone: sum_to_shape (or an op's own use of it) returns the gradient as
  it came.
Each mutant is a copy of the repository's package and tests in a temporary folder; the
gradient tests run against it (stopping at the first failure). A mutant is caught when a test
fails. Survivors are listed by name. Writes MUTANTS.md into --out.
"""
import argparse
import ast
import concurrent.futures
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.report import write_report  # noqa: E402
# the tests that check derivatives, the quickest catchers first
TESTS = ["tests/test_kernels.py", "tests/test_func.py", "tests/test_ops.py", "tests/test_edges.py", "tests/test_higher_order.py",
         "tests/test_fuzz.py", "tests/test_gradcheck.py", "tests/test_numpy_interop.py",
         "tests/test_tensor.py", "tests/test_nn.py", "tests/test_properties.py",
         "tests/test_reference.py", "tests/test_optim.py"]


# ---------------------------------------------------------------- finding the mutation sites

class _Sites(ast.NodeTransformer):
    """Walks the backward passes of a module: counts mutation sites, and when `target` is a
    site number, applies that one mutation. `found` lists (site, where, description)."""

    def __init__(self, functions, target=None, kernels=False):
        self.functions, self.target, self.kernels = functions, target, kernels
        self.found, self.where = [], None

    def _site(self, description, mutated, original):
        index = len(self.found)
        self.found.append((index, self.where, description))
        return mutated() if index == self.target else original

    # the scopes we mutate in
    def visit_ClassDef(self, node):
        outer, self.cls = getattr(self, "cls", None), node.name
        self.generic_visit(node)
        self.cls = outer
        return node

    def visit_FunctionDef(self, node):
        qualified = f"{self.cls}.{node.name}" if getattr(self, "cls", None) else node.name
        if self.kernels:                   # every kernel function but the plain references
            if node.name.startswith(("reference_", "_flat_windows", "_grouped", "__")):
                return node
        elif node.name not in self.functions and qualified not in self.functions:
            return node
        outer, self.where = self.where, qualified
        self.generic_visit(node)
        self.where = outer
        return node

    def _inside(self):
        return self.where is not None

    def visit_JoinedStr(self, node):
        return node                      # an error message's text: no behaviour to break

    # a sign flipped, a gradient doubled
    def visit_Return(self, node):
        self.generic_visit(node)
        if not self._inside() or node.value is None:
            return node
        elements = node.value.elts if isinstance(node.value, ast.Tuple) else None
        if elements is None:
            if not self.kernels and not self.where.endswith(("_loss_gradient", ".jvp")):
                return node                    # a call that returns the tuple (Mean's)
            elements = [node.value]
            single = True
        else:
            single = False
        for i, element in enumerate(elements):
            if isinstance(element, ast.Constant) and element.value is None:
                continue
            label = ("the tangent" if self.where.endswith(".jvp") else "the gradient") \
                if single else f"gradient {i + 1}"
            for kind, make in (("negated", lambda e: ast.UnaryOp(ast.USub(), e)),
                               ("doubled", lambda e: ast.BinOp(ast.Constant(2), ast.Mult(),
                                                                e))):
                replaced = self._site(f"{label} {kind}", lambda: make(copy.deepcopy(element)),
                                      element)
                if replaced is not element:
                    if single:
                        node.value = replaced
                    else:
                        node.value.elts[i] = replaced
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if self._inside() and isinstance(node.op, ast.USub) and \
                not isinstance(node.operand, ast.Constant):         # not an index like -1
            return self._site(f"sign of `{ast.unparse(node)}` dropped", lambda: node.operand,
                              node)
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if not self._inside():
            return node
        text = ast.unparse(node)
        if isinstance(node.op, ast.Sub):
            node = self._site(f"`{text}` with + for -",
                              lambda: ast.BinOp(node.left, ast.Add(), node.right), node)
        elif isinstance(node.op, (ast.Mult, ast.Div)) and not any(
                isinstance(side, (ast.Tuple, ast.List)) for side in (node.left, node.right)):
            for side in ("left", "right"):
                if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
                    kept = node.right if side == "left" else node.left
                    if side == "left" and isinstance(node.op, ast.Div):
                        continue                   # dropping a numerator is not a factor
                    node = self._site(f"factor `{ast.unparse(getattr(node, side))}` dropped "
                                      f"from `{text}`", lambda kept=kept: kept, node)
        return node

    # a transpose lost, a reduction over the wrong axis
    def visit_Attribute(self, node):
        self.generic_visit(node)
        if self._inside() and node.attr == "T" and isinstance(node.ctx, ast.Load):
            return self._site(f"transpose lost in `{ast.unparse(node)}`", lambda: node.value,
                              node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if not self._inside() or not isinstance(node.func, ast.Attribute):
            return node
        name = node.func.attr
        if name in ("swapaxes", "transpose"):
            return self._site(f"transpose lost in `{ast.unparse(node)}`",
                              lambda: node.func.value, node)
        if name == "sum":
            for k, keyword in enumerate(node.keywords):
                if keyword.arg == "axis" and not (isinstance(keyword.value, ast.Constant) and
                                                  keyword.value.value is None):
                    def wrong(k=k):
                        mutated = copy.deepcopy(node)
                        mutated.keywords[k].value = ast.Constant(None)
                        return mutated
                    return self._site(f"`{ast.unparse(node)}` summed over every axis", wrong,
                                      node)
        if name == "sum_to_shape":
            return self._site(f"broadcast not undone in `{ast.unparse(node)}`",
                              lambda: node.args[0], node)
        return node


class _BroadcastSite(ast.NodeTransformer):
    """sum_to_shape that returns the gradient as it came (reshaped only where it can be)."""

    def visit_FunctionDef(self, node):
        if node.name == "sum_to_shape":
            node.body = [ast.parse("return g").body[0]]
        return node


OP_FILES = ("engine/ops.py", "engine/conv.py", "engine/norm.py", "engine/cells.py")
KERNEL_FILES = ("engine/kernels/convolution.py", "engine/kernels/conv_algorithms.py",
                "engine/kernels/fourier.py", "engine/kernels/pooling.py",
                "engine/kernels/batchnorm.py", "engine/kernels/windows.py",
                "engine/kernels/special.py", "engine/kernels/blas.py")


def _mutants():
    """[(file, description, tree)] for every planted bug."""
    out = []
    functions = {"backward", "jvp", "_index_add", "_loss_gradient", "_backward_arrays"}
    for filename in OP_FILES + KERNEL_FILES:
        kernels = filename in KERNEL_FILES
        source = open(os.path.join(ROOT, "tinygrad_mnist", filename)).read()
        sites = _Sites(functions, kernels=kernels)
        sites.visit(ast.parse(source))
        for index, where, description in sites.found:
            tree = _Sites(functions, target=index, kernels=kernels).visit(ast.parse(source))
            where = f"{filename[len('engine/'):]} {where}" if kernels else where
            out.append((filename, f"{where}: {description}", tree))
    engine = os.path.join(ROOT, "tinygrad_mnist", "engine", "graph.py")
    tree = _BroadcastSite().visit(ast.parse(open(engine).read()))
    out.append(("engine/graph.py", "sum_to_shape: broadcast not undone (the gradient returned "
                                   "as it came)", tree))
    return out


def _is_kernel(description):
    return description.startswith("kernels/")


# ---------------------------------------------------------------- running one

def _copy_tree(target):
    for part in ("tinygrad_mnist", "tests", "examples"):     # tests run some examples
        shutil.copytree(os.path.join(ROOT, part), os.path.join(target, part),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):                        # the offline data, as tests expect it
        os.symlink(shared, os.path.join(os.path.dirname(target), "shared"))


def _run(mutant, timeout):
    filename, description, tree = mutant
    with tempfile.TemporaryDirectory() as base:
        target = os.path.join(base, "repo")
        os.makedirs(target)
        _copy_tree(target)
        with open(os.path.join(target, "tinygrad_mnist", filename), "w") as f:
            f.write(ast.unparse(ast.fix_missing_locations(tree)))
        env = dict(os.environ, PYTHONPATH=target, OPENBLAS_NUM_THREADS="1",
                   PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                   "-W", "ignore", *TESTS]
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=target, env=env, capture_output=True,
                                    text=True, timeout=timeout)
            caught = result.returncode != 0
            lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
            by = lines[0].split(" - ")[0][len("FAILED "):] if lines else (
                "an error while collecting" if caught else "")
        except subprocess.TimeoutExpired:
            caught, by = True, f"a test that ran past {timeout} s"
        return description, caught, by, time.perf_counter() - started


def _check_control(timeout):
    """The unmutated copy must pass the tests: a test that fails in the copy for another
    reason (a file the copy lacks) would otherwise "catch" every mutant."""
    filename = OP_FILES[0]
    with open(os.path.join(ROOT, "tinygrad_mnist", filename)) as f:
        tree = ast.parse(f.read())
    _, caught, by, _ = _run((filename, "the unmutated copy", tree), timeout)
    if caught:
        raise SystemExit(f"mutants: the unmutated copy fails {by}; fix that first")


def _check_isolation():
    """The mutant copies must be what the tests import, not an installed package."""
    with tempfile.TemporaryDirectory() as base:
        target = os.path.join(base, "repo")
        os.makedirs(target)
        _copy_tree(target)
        found = subprocess.run([sys.executable, "-c", "import tinygrad_mnist; "
                                "print(tinygrad_mnist.__file__)"], cwd=target,
                               env=dict(os.environ, PYTHONPATH=target), capture_output=True,
                               text=True).stdout.strip()
        if not found.startswith(target):
            raise SystemExit(f"mutants: the tests would import {found}, not the mutated copy")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=None,
                        help="run the mutants whose name contains this (or, comma-separated, "
                             "any of these)")
    parser.add_argument("--names", default=None,
                        help="a file of mutant names, one a line: run those")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks"))
    args = parser.parse_args(argv)
    _check_isolation()
    _check_control(args.timeout)
    wanted = None if args.only is None else args.only.split(",")
    mutants = [m for m in _mutants() if wanted is None or any(w in m[1] for w in wanted)]
    if args.names is not None:
        with open(args.names) as f:
            names = {line.strip() for line in f if line.strip()}
        mutants = [m for m in mutants if m[1] in names]
    print(f"{len(mutants)} mutants, {args.workers} at a time")
    started = time.perf_counter()
    results = []
    with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_run, m, args.timeout) for m in mutants]
        for future in concurrent.futures.as_completed(futures):
            description, caught, by, seconds = future.result()
            results.append((description, caught, by, seconds))
            print(f"{'caught  ' if caught else 'SURVIVED'} {description} ({seconds:.0f} s)"
                  + (f"  by {by}" if caught else ""), flush=True)
    results.sort()
    survivors = [r for r in results if not r[1]]
    total = time.perf_counter() - started
    lines = ["# Planted bugs", "",
             f"`python -m benchmarks.mutants` planted {len(results)} bugs, one at a time, in "
             f"the backward passes and jvp rules of the ops "
             f"({sum(not _is_kernel(d) for d, *_ in results) - 1}), in the kernels "
             f"({sum(_is_kernel(d) for d, *_ in results)}) and in the engine's sum_to_shape, "
             f"and ran the "
             f"gradient tests against each ({total / 60:.1f} minutes, {args.workers} "
             f"workers).", "",
             f"**Planted {len(results)}, caught {len(results) - len(survivors)}, survived "
             f"{len(survivors)}.**", ""]
    if survivors:
        lines += ["Survivors:", ""] + [f"- {d}" for d, *_ in survivors] + [""]
    lines += ["| mutant | caught by |", "| --- | --- |"]
    lines += [f"| {d.replace('|', '/')} | {by.replace('|', '/') if caught else 'SURVIVED'} |"
              for d, caught, by, _ in results]
    if args.only is None:
        write_report(args.out, "MUTANTS.md", "\n".join(lines), echo=False)
    print(f"planted {len(results)}, caught {len(results) - len(survivors)}, survived "
          f"{len(survivors)} in {total / 60:.1f} min")
    for d, *_ in survivors:
        print(f"  survived: {d}")


if __name__ == "__main__":
    main()
