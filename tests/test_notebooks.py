"""The teaching notebooks in examples/ run top to bottom in a kernel of this environment, offline,
and are committed without outputs."""
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

pytestmark = pytest.mark.slow        # runs the notebooks (pytest -m "not slow" skips it)

EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


@pytest.fixture
def execute(mnist_dir, monkeypatch):
    monkeypatch.setenv("TINYGRAD_MNIST_DATA", str(mnist_dir.parent))   # the kernel inherits it
    return _execute


def _execute(name):
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    return notebook


def text_of(notebook):
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))


def test_the_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS == ["01_scalars_and_graphs.ipynb", "02_numpy_mlp_checked.ipynb",
                         "03_train_mnist.ipynb", "04_conv_net.ipynb",
                         "05_forward_vs_reverse.ipynb", "06_attention_from_scratch.ipynb"]
    for name in NOTEBOOKS:
        for cell in nbformat.read(EXAMPLES / name, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


def test_scalars_notebook(execute):
    notebook = execute("01_scalars_and_graphs.ipynb")
    text = text_of(notebook)
    assert "dL/da = 6.0, dL/db = -4.0, dL/dc = -2.0, dL/df = 4.0" in text
    drawn = [out for cell in notebook.cells for out in cell.get("outputs", [])
             if "image/svg+xml" in out.get("data", {})]
    assert drawn and "<svg" in drawn[0]["data"]["image/svg+xml"]


def test_numpy_mlp_notebook_finds_and_fixes_the_bias_bug(execute):
    text = text_of(execute("02_numpy_mlp_checked.ipynb"))
    first, fixed = text.split("parameter", 2)[1:]
    assert first.count("WRONG: one number where") == 3          # db1, db2, db3
    assert "WRONG" not in fixed and fixed.count("correct") == 6


def test_training_notebook(execute):
    notebook = execute("03_train_mnist.ipynb")
    text = text_of(notebook)
    accuracies = [float(line.rsplit(" ", 1)[1].rstrip("%")) for line in text.splitlines()
                  if line.startswith("epoch")]
    assert len(accuracies) == 3 and accuracies[-1] > 90
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 2                                     # curves and mistakes


def test_conv_net_notebook(execute):
    notebook = execute("04_conv_net.ipynb")
    text = text_of(notebook)
    assert "im2col == loops: True  engine == loops: True" in text
    assert "conv2d gradients match finite differences: True" in text
    assert "parameters: 61706" in text
    accuracies = [float(line.rsplit(" ", 1)[1].rstrip("%")) for line in text.splitlines()
                  if line.startswith("epoch")]
    assert len(accuracies) == 3 and accuracies[-1] > 94
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 2                                 # the columns; filters and maps


def test_forward_vs_reverse_notebook(execute):
    notebook = execute("05_forward_vs_reverse.ipynb")
    text = text_of(notebook)
    assert "dual numbers: f = 6.909297, df/dx = 2.583853" in text
    assert "func.jvp:     f = 6.909297, df/dx = 2.583853" in text
    assert text.count("same Jacobian") == 7
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 1


def test_attention_from_scratch_notebook(execute):
    """Attention written as matmuls and a softmax equals nn.MultiheadAttention, and its
    gradients equal finite differences; the heads and the graph are drawn."""
    notebook = execute("06_attention_from_scratch.ipynb")
    text = text_of(notebook)
    differences = [float(line.split(":")[1]) for line in text.splitlines()
                   if line.startswith("largest difference")]
    assert len(differences) == 2 and max(differences) < 1e-12
    assert "gradcheck: True" in text and "rows sum to [1. 1. 1. 1. 1. 1.]" in text
    kinds = {key for cell in notebook.cells for out in cell.get("outputs", [])
             for key in out.get("data", {})}
    assert {"image/png", "image/svg+xml"} <= kinds
