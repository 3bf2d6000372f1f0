"""Where every benchmark writes its Markdown report: one file, written atomically, also
printed so that a run shows its figures."""
import os

from tinygrad_mnist.files import atomic_write


def write_report(directory, name, text, echo=True):
    """Write `text` to directory/name (creating the directory) and print it, or with
    echo=False a line saying where it went."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with atomic_write(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    print(text if echo else f"wrote {path}")
