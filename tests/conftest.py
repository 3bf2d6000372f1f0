import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(name):
    """The offline copies in ../shared/data (or $TINYGRAD_MNIST_DATA)."""
    base = Path(os.environ.get("TINYGRAD_MNIST_DATA", ROOT.parent / "shared" / "data"))
    path = base / name
    if not (path / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.fail(f"offline dataset not found at {path}: put shared/ beside the repository "
                    f"or set TINYGRAD_MNIST_DATA")
    return path


def shared_reference_dir():
    """The reference notebooks in ../shared/reference (or $TINYGRAD_MNIST_REFERENCE)."""
    path = Path(os.environ.get("TINYGRAD_MNIST_REFERENCE", ROOT.parent / "shared" / "reference"))
    if not path.is_dir():
        pytest.fail(f"reference notebooks not found at {path}: put shared/ beside the "
                    f"repository or set TINYGRAD_MNIST_REFERENCE")
    return path


@pytest.fixture(scope="session")
def mnist_dir():
    return shared_data_dir("mnist")


@pytest.fixture(scope="session")
def fashion_dir():
    return shared_data_dir("fashion-mnist")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a network or runs the command line in a "
                                       "subprocess; `pytest -m \"not slow\"` leaves them out")


def pytest_addoption(parser):
    parser.addoption("--fuzz-budget", type=int, default=None,
                     help="random graphs for tests/test_fuzz.py (default: the CI budget)")
    parser.addoption("--composition-budget", type=int, default=None,
                     help="random programs for tests/test_composition_fuzz.py (default: the "
                          "CI budget)")


def pytest_generate_tests(metafunc):
    if "fuzz_seed" in metafunc.fixturenames:
        from test_fuzz import CI_BUDGET
        budget = metafunc.config.getoption("--fuzz-budget") or CI_BUDGET
        metafunc.parametrize("fuzz_seed", range(budget))
