"""What the benchmarks share: their Markdown report (one file, written atomically, also
printed so that a run shows its figures), arms timed in turns, and medians with ranges."""
import os
import statistics
import time

from tinygrad_mnist.files import atomic_write


def write_report(directory, name, text, echo=True):
    """Write `text` to directory/name (creating the directory) and print it, or with
    echo=False a line saying where it went."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with atomic_write(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    print(text if echo else f"wrote {path}")


def arguments(doc, rounds=7):
    """A benchmark's command line: --rounds, and --out (the report's directory)."""
    import argparse
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", default="benchmarks")
    return parser.parse_args()


def take_turns(work, rounds, repeats=3):
    """name -> each round's median seconds of work[name](), the arms taking turns within a
    round. A call may return the seconds it measured itself, as a float (a backward timed
    after an untimed forward); otherwise (None, a result) the whole call is timed."""
    times = {name: [] for name in work}
    for _ in range(rounds):
        for name, call in work.items():
            spent = []
            for _ in range(repeats):
                started = time.perf_counter()
                measured = call()
                spent.append(measured if type(measured) is float else
                             time.perf_counter() - started)
            times[name].append(statistics.median(spent))
    return times


def ms_range(rounds, digits=1):
    """Per-round seconds as 'median (min–max)' in milliseconds."""
    ms = [t * 1e3 for t in rounds]
    return f"{statistics.median(ms):.{digits}f} ({min(ms):.{digits}f}–{max(ms):.{digits}f})"
