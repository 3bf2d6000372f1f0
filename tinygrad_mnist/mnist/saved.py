"""A model.npz written by `train`, read back as the network it was trained as."""
import numpy as np


def load_model(path):
    """(model in eval mode, its stored metadata) of a model.npz written by `train`, built as
    it was trained."""
    from .. import nn
    from .models import build
    arrays = nn.load_arrays(path)
    if any(k.startswith("model.") for k in arrays):
        raise ValueError(f"{path} is a training checkpoint, not a model: pass the model.npz "
                         f"that `tinygrad-mnist train` writes beside it when it finishes")
    meta = nn.load_meta(path)
    if not meta or "hidden" not in meta:
        raise ValueError(f"{path}: no architecture stored beside the weights; use a model.npz "
                         f"written by `tinygrad-mnist train`")
    def built(dropout):     # a conv net's layer names depend on whether it has dropout
        return build(meta.get("arch", "mlp"), meta["hidden"], meta.get("activation", "relu"),
                     dropout=dropout, cnn_kernel=meta.get("cnn_kernel", 5))
    model = built(meta.get("dropout", 0.0))
    if "dropout" not in meta and not set(model.state_dict()) <= set(arrays):
        model = built(0.5)          # saved before the dropout was stored: it had some
    nn.load(model, path)
    bad = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
    if bad:
        raise ValueError(f"{path}: the weights {', '.join(bad)} hold NaN or inf: the run that "
                         f"wrote it diverged")
    return model.eval(), meta
