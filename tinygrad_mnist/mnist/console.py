"""What the command line draws besides its results: one kind of progress bar, and lines that
start on a fresh line after a Ctrl-C."""
import os
import sys


def progress_bar(total, desc, unit, enabled=True, leave=False, unit_scale=False):
    """A tqdm bar on stderr. It follows the terminal's width; where the terminal reports none
    (0 columns, to which tqdm would cut every line short), it takes 120 columns."""
    from tqdm import tqdm
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = None                                  # not a terminal
    fixed = columns is not None and columns <= 0
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                disable=not enabled, file=sys.stderr, dynamic_ncols=not fixed,
                ncols=120 if fixed else None)


def stderr_line(text):
    """One line on stderr; on a terminal, after a line break, so that a message following
    Ctrl-C is not glued to the ^C the terminal echoed."""
    lead = "\n" if sys.stderr.isatty() else ""
    print(f"{lead}{text}", file=sys.stderr)


def counted(n, noun):
    """'1 epoch', '3 epochs': a count with its noun in the right number."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
