"""Draw a digit and watch the network answer: one self-contained HTML file (no network, no
server, the weights inside) that runs a trained model in the page as you draw.

The page shows the 28x28 input after the preprocessing `predict` uses (mnist/images.py:
cropped, scaled into a 20x20 box with Pillow's Lanczos filter, centred by mass), every
layer's output, the ten probabilities, and why: the gradient of the chosen class's logit with
respect to the input pixels, by backpropagation through the same layers in the page, with a
stepper that walks the backward pass one layer at a time.

The layers are read from the model's own forward pass (each op the engine runs on one image,
heard through the observer seam), so the page computes what the model computes: a chain of
linear, conv2d, max-pool, batch norm (eval), activation and reshape ops. Test digits travel
with the page, the ones the model gets wrong among them.
"""
import base64
import html
import json
import os

import numpy as np

from ..engine import Tensor
from ..tracing import forward_ops
from .drawing import write_file

ACTIVATIONS = ("relu", "sigmoid", "tanh")


def _array(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


def layers_of(model):
    """The page's layers (dicts) and arrays (name -> float32), from model's ops on one image.
    Each layer takes the previous one's output; any other shape of network is refused."""
    x = Tensor(np.zeros((1, 784), np.float32))
    steps, _ = forward_ops(model, x)
    layers, arrays, previous = [], {}, x

    def keep(tensor, name):
        arrays[name] = np.asarray(tensor.data, np.float32)
        return name

    for k, (op, inputs, out) in enumerate(steps):
        if inputs[0] is not previous:
            raise ValueError(f"playground: {op.name} (op {k}) does not take the previous "
                             f"layer's output: the page runs chains of layers")
        shape = list(out.shape[1:])
        name, layer = op.name, None
        if name == "linear":
            w = keep(inputs[1], f"w{k}")
            b = keep(inputs[2], f"b{k}") if len(inputs) > 2 else None
            layer = {"type": "linear", "weight": w, "bias": b,
                     "label": f"linear {inputs[1].shape[1]}\u2192{inputs[1].shape[0]}"}
        elif name == "conv2d":
            g = op.options["geometry"]
            if g.groups != 1 or g.dilation != (1, 1):
                raise ValueError("playground: grouped or dilated convolutions are not drawn")
            w = keep(inputs[1], f"w{k}")
            b = keep(inputs[2], f"b{k}") if len(inputs) > 2 else None
            layer = {"type": "conv", "weight": w, "bias": b, "kernel": list(g.kernel),
                     "stride": list(g.stride), "padding": list(g.padding),
                     "label": f"conv {g.kernel[0]}x{g.kernel[1]}, {shape[0]} maps"}
        elif name == "max_pool2d":
            g = op.options["geometry"]
            if g.dilation != (1, 1):
                raise ValueError("playground: dilated pooling is not drawn")
            layer = {"type": "maxpool", "kernel": list(g.kernel), "stride": list(g.stride),
                     "padding": list(g.padding), "label": f"max pool {g.kernel[0]}x{g.kernel[1]}"}
        elif name == "batch_norm":
            weight, bias, mean_c, var_c = (np.asarray(t.data, np.float64) for t in inputs[1:5])
            scale = weight / np.sqrt(var_c + op.options.get("eps", 1e-5))
            arrays[f"s{k}"] = scale.astype(np.float32)
            arrays[f"t{k}"] = (bias - mean_c * scale).astype(np.float32)
            layer = {"type": "affine", "scale": f"s{k}", "shift": f"t{k}",
                     "label": "batch norm"}
        elif name in ACTIVATIONS:
            layer = {"type": name, "label": name}
        elif name == "reshape":
            layer = {"type": "reshape",
                     "label": "flatten" if len(shape) == 1 else
                     "reshape to " + "\u00d7".join(map(str, shape))}
        else:
            raise ValueError(f"playground: the model runs {name}, which the page does not "
                             f"compute (it runs linear, conv2d, max_pool2d, batch_norm, "
                             f"{', '.join(ACTIVATIONS)} and reshape)")
        layer["shape"] = shape
        layers.append(layer)
        previous = out
    return layers, arrays


def _pixels(image):
    return base64.b64encode(np.asarray(image, np.uint8).tobytes()).decode()


def page_data(model, info, title, digits=()):
    layers, arrays = layers_of(model)
    return {"title": title, "classes": list(info.classes), "mean": float(info.mean),
            "std": float(info.std), "layers": layers,
            "arrays": {name: {"shape": list(a.shape), "data": _array(a)}
                       for name, a in arrays.items()},
            "digits": [{"index": i, "pixels": _pixels(p), "label": label, "answer": answer}
                       for i, p, label, answer in digits]}


def _template():
    with open(os.path.join(os.path.dirname(__file__), "playground.html"),
              encoding="utf-8") as f:
        return f.read()


def playground(model, info, path, title=None, digits=()):
    """Write the page for `model` (inputs standardized with info.mean and info.std, classes
    info.classes) to path; returns the path."""
    title = title or f"tinygrad_mnist playground: {model!r}"
    data = page_data(model, info, title, digits)
    page = _template().replace("__TITLE__", html.escape(title)).replace(
        "__DATA__", json.dumps(data).replace("</", "<\\/"))
    write_file(str(path), page.encode())
    return str(path)
