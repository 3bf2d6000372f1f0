"""A run's checkpoint: the model, the optimizer and the history after each complete epoch,
written atomically, and read back only whole (a bad file changes nothing)."""
import json
import os

import numpy as np

from .. import nn


def checkpoint_path(out):
    return os.path.join(out, "checkpoint.npz")


def save_checkpoint(out, model, optimizer, config, epoch, history, elapsed):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays[nn.META_KEY] = np.array(json.dumps({"epoch": epoch, "history": history,
                                          "elapsed": elapsed, "config": config.fingerprint(),
                                          "data_dir": absolute(config.data_dir)}))
    nn.save_arrays(arrays, checkpoint_path(out))


def absolute(directory):
    return None if directory is None else os.path.abspath(directory)


def stored_data_dir(path):
    """The data directory a run (its checkpoint.npz or model.npz) was trained from, if it
    still exists: --resume and eval read the same files again without --data-dir."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = nn.META_KEY if nn.META_KEY in archive.files else "meta"   # "meta": older
            directory = json.loads(str(archive[key])).get("data_dir")
    except (OSError, KeyError, ValueError, AttributeError):
        return None
    return directory if directory and os.path.isdir(directory) else None


def load_checkpoint(out, model, optimizer, config):
    """Restore the last complete epoch. Returns (next epoch, history, elapsed seconds). The
    whole file is checked first: a bad checkpoint changes neither model nor optimizer."""
    path = checkpoint_path(out)
    arrays = nn.load_arrays(path)
    try:
        meta = json.loads(str(arrays.pop(nn.META_KEY if nn.META_KEY in arrays else "meta")))
        epoch, history, elapsed, saved = (meta["epoch"], meta["history"], meta["elapsed"],
                                          meta["config"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"--resume: {path} has no readable 'meta' entry ({error!r})") from None
    saved = {"arch": "mlp", **saved}                 # runs from before --arch
    current = config.fingerprint()
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed:
        raise ValueError(f"--resume: the checkpoint in {out} was made with different settings "
                         f"({', '.join(changed)}); use the same options or another --out")
    model_state = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
    optim_state = {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}
    try:
        model.check_state_dict(model_state)
        optimizer.load_state_dict(optim_state)      # checks everything before it changes
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"--resume: {path} does not fit this model: {error}") from None
    if epoch > config.epochs:
        raise ValueError(f"--resume: the run in {out} has {epoch} epochs already; pass "
                         f"--epochs {epoch} or more to continue or extend it")
    model.load_state_dict(model_state)
    return epoch + 1, history, elapsed
