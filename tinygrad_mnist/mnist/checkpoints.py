"""A run's checkpoint: the model, the optimizer and the history after each complete epoch,
written atomically, and read back only whole (a bad file changes nothing)."""
import json
import os
import zipfile
import zlib

import numpy as np

from .. import nn
from ..engine.kernels.convolution import restore_choices, saved_choices
from .options import BY_NAME


def checkpoint_path(out):
    return os.path.join(out, "checkpoint.npz")


def save_checkpoint(out, model, optimizer, config, epoch, history, elapsed, extra=None):
    """The run after `epoch` (with `extra` arrays: the weight average's)."""
    arrays = dict(extra or {})
    arrays.update({f"model.{k}": v for k, v in model.state_dict().items()})
    arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    arrays[nn.META_KEY] = np.array(json.dumps({"epoch": epoch, "history": history,
                                          "elapsed": elapsed, "config": config.fingerprint(),
                                          "epochs": config.epochs,
                                          "data_dir": absolute(config.data_dir),
                                          "conv_strategies": saved_choices()}))
    nn.save_arrays(arrays, checkpoint_path(out))


def absolute(directory):
    return os.path.abspath(directory) if directory else None


def stored_data_dir(path, missing_ok=True, otherwise="--download to fetch the official files"):
    """The data directory a run (its checkpoint.npz or model.npz) was trained from, if it
    still exists: --resume and eval read the same files again without --data-dir. A folder
    that was stored and is gone is None, or with missing_ok=False a ValueError naming it."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = nn.META_KEY if nn.META_KEY in archive.files else "meta"   # "meta": older
            directory = json.loads(str(archive[key])).get("data_dir")
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile, zlib.error,
            EOFError):
        return None
    if directory and not os.path.isdir(directory) and not missing_ok:
        raise ValueError(f"{path} was trained on the files in {directory}, which is gone; pass "
                         f"--data-dir DIR with the data, or {otherwise}")
    return directory if directory and os.path.isdir(directory) else None


def stored_options(path):
    """The options a run was started with (its fingerprint and its --epochs), from its
    checkpoint, or {} when the file cannot tell: --resume takes them for every option the
    command line leaves out."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = nn.META_KEY if nn.META_KEY in archive.files else "meta"
            meta = json.loads(str(archive[key]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError):
        return {}
    options = dict(meta.get("config") or {})
    if "epochs" in meta:
        options["epochs"] = meta["epochs"]
    return options


def load_checkpoint(out, model, optimizer, config, average=None):
    """Restore the last complete epoch (and the weight average, if given). Returns (next
    epoch, history, elapsed seconds). The whole file is checked first: a bad checkpoint
    changes neither model nor optimizer."""
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
    # an option newer than the checkpoint reads as its default
    changed = sorted(k for k in current if saved.get(k, BY_NAME[k].default) != current[k])
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
        raise ValueError(f"--resume: the run in {out} has {epoch} epoch{'s' * (epoch != 1)} already; pass "
                         f"--epochs {epoch} or more to continue or extend it")
    if average is not None:
        average.load(arrays)
    model.load_state_dict(model_state)
    restore_choices(meta.get("conv_strategies", []))   # the same sums as before the crash
    return epoch + 1, history, elapsed
