"""The names: read from names.txt (one lower-case name a line), split by a fixed-seed shuffle
holding out min(1000, 10%) names for the test set, and encoded as makemore does: token 0 is
the start and the end of a name, 1..26 the letters; a name of n letters is the input
[0, c1, ..., cn] and the target [c1, ..., cn, 0], padded to the longest name plus one (the
inputs with 0, the targets with -1, which the loss ignores)."""
import os

import numpy as np

IGNORE = -1
SPLIT_SEED = 3407               # makemore's default seed


class NamesError(ValueError):
    """names.txt is missing or holds something that is not a list of names."""


def read_names(data_dir):
    """The names in DATA_DIR/names.txt (or the file itself), checked: lower-case letters."""
    path = data_dir if os.path.isfile(data_dir) else os.path.join(data_dir, "names.txt")
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise NamesError(f"{path}: not found; pass --data-dir with the folder holding "
                         f"names.txt (one name a line)") from None
    except UnicodeDecodeError as error:
        raise NamesError(f"{path}: not a text file ({error.reason})") from None
    if not names:
        raise NamesError(f"{path}: holds no names")
    bad = next((n for n in names if not (n.isascii() and n.isalpha())), None)
    if bad is not None:
        raise NamesError(f"{path}: {bad!r} is not a name of letters a-z")
    return [n.lower() for n in names]


class Vocabulary:
    """Token 0 marks a name's start and end; the letters follow in alphabetical order."""

    def __init__(self, names):
        self.letters = sorted(set("".join(names)))
        self.index = {c: i + 1 for i, c in enumerate(self.letters)}
        self.size = len(self.letters) + 1
        self.block = max(len(n) for n in names) + 1

    def encode(self, names):
        """(inputs, targets) as (len(names), block) int64 arrays."""
        x = np.zeros((len(names), self.block), dtype=np.int64)
        y = np.full((len(names), self.block), IGNORE, dtype=np.int64)
        for row, name in enumerate(names):
            codes = [self.index[c] for c in name]
            x[row, 1:len(codes) + 1] = codes
            y[row, :len(codes)] = codes
            y[row, len(codes)] = 0
        return x, y

    def decode(self, codes):
        return "".join(self.letters[c - 1] for c in codes if c)


def split(names, seed=SPLIT_SEED):
    """(train, test): the test set is min(1000, 10%) names of a fixed-seed shuffle."""
    order = np.random.default_rng(seed).permutation(len(names))
    held = min(1000, len(names) // 10)
    shuffled = [names[i] for i in order]
    return shuffled[held:], shuffled[:held]
