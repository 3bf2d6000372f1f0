"""Hand-derived backpropagation: a correct general one for dense MLPs, and the five reference
notebooks' own code (notebook_code/, copied as written, bugs included), checked against autograd.

Every notebook entry gives: parameters in the notebook's own layout; the loss, computed by the
notebook's own forward code running on Tensors (NumPy's functions record the graph), so autograd
differentiates the notebook itself; and the notebook's own backward code, on arrays.
`check_notebook(name)` runs handcheck.compare_manual on them.
"""
from dataclasses import dataclass, field

import numpy as np

from ..handcheck import compare_manual
from ..engine import Tensor
from .notebook_code import nb000, nb001, nb002, nb003, nb004

# ---------------------------------------------------------------- the correct general version

_ACTIVATIONS = {
    # name: (f(z), f'(z) written with z and a = f(z))
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a)),
    "tanh": (np.tanh, lambda z, a: 1 - a * a),
}


def mlp_forward(weights, biases, x, activation="relu"):
    """Row layout (batch, features), weights (out, in) as nn.Linear. Returns the pre-activations
    and activations of every layer; the last layer's Z are the logits."""
    f = _ACTIVATIONS[activation][0]
    zs, activations = [], [x]
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = activations[-1] @ w.T + b
        zs.append(z)
        activations.append(f(z) if i < len(weights) - 1 else z)
    return zs, activations


def mlp_backprop(weights, biases, x, labels, activation="relu"):
    """Gradients of the mean softmax cross-entropy of an MLP of any depth, derived by hand:

        dZ_L = (softmax(Z_L) - Y) / m              the output layer
        dW_l = dZ_l^T A_(l-1)      db_l = sum over the batch of dZ_l
        dZ_(l-1) = (dZ_l W_l) * f'(Z_(l-1))        back through layer l and the activation

    Returns ([dW_1, ..., dW_L], [db_1, ..., db_L]).
    """
    derivative = _ACTIVATIONS[activation][1]
    zs, activations = mlp_forward(weights, biases, x, activation)
    m = len(x)
    logits = zs[-1]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    dz = e / e.sum(axis=1, keepdims=True)
    dz[np.arange(m), labels] -= 1
    dz /= m
    grads_w, grads_b = [None] * len(weights), [None] * len(weights)
    for layer in reversed(range(len(weights))):
        grads_w[layer] = dz.T @ activations[layer]
        grads_b[layer] = dz.sum(axis=0)
        if layer:
            dz = (dz @ weights[layer]) * derivative(zs[layer - 1], activations[layer])
    return grads_w, grads_b


# ---------------------------------------------------------------- the notebooks' own code

def _onehot_columns(labels, n=10):
    return np.eye(n)[labels].T                     # (10, m), as pd.get_dummies(...).values.T


@dataclass
class Notebook:
    name: str
    network: str
    loss_name: str
    params: callable          # rng -> {name: array} in the notebook's layout
    loss: callable            # (params as Tensors, x, labels) -> scalar Tensor, by its forward
    manual: callable          # (params as arrays, x, labels) -> {name: gradient as applied}
    alternatives: dict = field(default_factory=dict)
    note: str = ""


# 000: the notebook computes no loss; its forward's output against the squared error, and
# against the binary cross-entropy that dZ2 = A2 - Y belongs to
def _nb000_params(rng):
    return {"W1": rng.normal(size=(64, 784)) * 0.1, "b1": rng.normal(size=(64, 1)) * 0.1,
            "W2": rng.normal(size=(10, 64)) * 0.3, "b2": rng.normal(size=(10, 1)) * 0.1}


def _nb000_output(p, x):
    return nb000.forward_propagation(x, p["W1"], p["b1"], p["W2"], p["b2"])["A2"]


def _nb000_squared_error(p, x, labels):
    diff = _nb000_output(p, x) - _onehot_columns(labels)
    return np.sum(diff * diff) / (2 * len(x))


def _nb000_bce(p, x, labels):
    a2, y = _nb000_output(p, x), _onehot_columns(labels)
    return -np.sum(y * np.log(a2) + (1 - y) * np.log(1 - a2)) / len(x)


def _nb000_manual(p, x, labels):
    cache = nb000.forward_propagation(x, p["W1"], p["b1"], p["W2"], p["b2"])
    g = nb000.backward_propagation(x, _onehot_columns(labels), cache, p["W1"], p["W2"])
    return {"W1": g["dW1"], "b1": g["db1"], "W2": g["dW2"], "b2": g["db2"]}


# 001: its own layers and its own sparse categorical cross-entropy
def _nb001_params(rng):
    return {"dense1.weights": rng.normal(size=(784, 128)) * 0.05,
            "dense1.biases": rng.normal(size=(1, 128)) * 0.1,
            "dense2.weights": rng.normal(size=(128, 10)) * 0.2,
            "dense2.biases": rng.normal(size=(1, 10)) * 0.1}


def _nb001_network(p):
    dense1, dense2 = nb001.Layers_Dense.__new__(nb001.Layers_Dense), \
        nb001.Layers_Dense.__new__(nb001.Layers_Dense)
    dense1.weights, dense1.biases = p["dense1.weights"], p["dense1.biases"]
    dense2.weights, dense2.biases = p["dense2.weights"], p["dense2.biases"]
    return dense1, nb001.Relu(), dense2, nb001.Softmax()


def _nb001_forward(p, x):
    dense1, activation1, dense2, activation2 = _nb001_network(p)
    dense1.forward(x)                                # the notebook's training loop, as written
    activation1_output = activation1.forward(dense1.output)
    dense2.forward(activation1_output)
    return (dense1, activation1, dense2), activation2.forward(dense2.output)


def _nb001_loss(p, x, labels):
    return nb001.sparse_categorical_crossentropy(_nb001_forward(p, x)[1], labels)


def _nb001_manual(p, x, labels):
    (dense1, activation1, dense2), activation2_output = _nb001_forward(p, x)
    dvalues = activation2_output
    dvalues[range(len(dvalues)), labels] -= 1
    dvalues = dvalues / len(dvalues)
    dinputs = dense2.backward(dvalues, 0.0)          # learning_rate 0: read, do not update
    dinputs = activation1.backward(dinputs)
    dense1.backward(dinputs, 0.0)
    return {"dense1.weights": dense1.dweights, "dense1.biases": dense1.dbiases,
            "dense2.weights": dense2.dweights, "dense2.biases": dense2.dbiases}


# 002: no loss in the notebook; the mean cross-entropy that dZ3 = A3 - one_hot_Y belongs to
def _nb002_params(rng):
    return {"W1": rng.normal(size=(10, 784)) * np.sqrt(1 / 784),
            "b1": rng.normal(size=(10, 1)) * np.sqrt(1 / 10),
            "W2": rng.normal(size=(10, 10)) * np.sqrt(1 / 20),
            "b2": rng.normal(size=(10, 1)) * np.sqrt(1 / 10),
            "W3": rng.normal(size=(10, 10)) * np.sqrt(1 / 20),
            "b3": rng.normal(size=(10, 1)) * np.sqrt(1 / 784)}


_NB002 = ("W1", "b1", "W2", "b2", "W3", "b3")


def _nb002_loss(p, x, labels):
    A3 = nb002.forward_prop(*(p[k] for k in _NB002), x.T)[-1]    # samples in columns
    return -np.mean(np.sum(nb002.one_hot(labels) * np.log(A3), axis=0))


def _nb002_manual(p, x, labels):
    X = x.T
    Z1, A1, Z2, A2, Z3, A3 = nb002.forward_prop(*(p[k] for k in _NB002), X)
    grads = nb002.back_prop(Z1, A1, Z2, A2, Z3, A3, p["W1"], p["W2"], p["W3"], X, labels)
    return dict(zip(("W1", "b1", "W2", "b2", "W3", "b3"), grads))


# 003: its own cross-entropy, the batch average it prints
def _nb003_params(rng):
    return {"w1": rng.normal(size=(784, 64)) * 0.1, "b1": rng.normal(size=64) * 0.1,
            "w2": rng.normal(size=(64, 10)) * 0.3, "b2": rng.normal(size=10) * 0.1}


def _nb003_loss(p, x, labels):
    return nb003.forward(x, np.eye(10)[labels], p["w1"], p["b1"], p["w2"], p["b2"],
                         softmax=nb003.softmax_vectorized)[-1]


def _nb003_manual(p, x, labels):
    d_w1, d_b1, d_w2, d_b2 = nb003.backward(x, np.eye(10)[labels], p["w1"], p["b1"], p["w2"],
                                            p["b2"])
    return {"w1": d_w1, "b1": d_b1, "w2": d_w2, "b2": d_b2}


# 004: its own class, its own cross_entropy_loss
def _nb004_params(rng):
    return {"W1": rng.normal(size=(128, 784)) * 0.05, "b1": rng.normal(size=(128, 1)) * 0.1,
            "W2": rng.normal(size=(10, 128)) * 0.2, "b2": rng.normal(size=(10, 1)) * 0.1}


def _nb004_model(p):
    model = nb004.NN.__new__(nb004.NN)                # its __init__ draws its own weights
    model.output_size = 10
    model.W1, model.b1, model.W2, model.b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    return model


def _nb004_loss(p, x, labels):
    model, X = _nb004_model(p), x.T                  # X as (784, m): see nb004's docstring
    model.forward_propagation(X)
    return model.cross_entropy_loss(X, labels)


def _nb004_manual(p, x, labels):
    model, X = _nb004_model(p), x.T
    model.forward_propagation(X)
    model.backward_propagation(X, labels)
    return {"W1": model.dW1, "b1": model.db1, "W2": model.dW2, "b2": model.db2}


NOTEBOOKS = {
    "000": Notebook(
        "000", "784-64-10, sigmoid hidden, sigmoid output", "squared error (1/2m) sum (A2 - Y)^2",
        _nb000_params, _nb000_squared_error, _nb000_manual,
        alternatives={"binary cross-entropy summed over the 10 sigmoid outputs": _nb000_bce},
        note="The notebook computes no loss at all (its text says softmax, its code uses "
             "sigmoid outputs); dZ2 = A2 - Y is exact only for binary cross-entropy on the "
             "sigmoid outputs, and drops the factor A2(1 - A2) of the squared error."),
    "001": Notebook("001", "784-128-10, ReLU, softmax", "mean sparse cross-entropy",
                    _nb001_params, _nb001_loss, _nb001_manual),
    "002": Notebook("002", "784-10-10-10, ReLU, ReLU, softmax", "mean cross-entropy",
                    _nb002_params, _nb002_loss, _nb002_manual,
                    note="db = 1/m * np.sum(dZ) sums over every axis: one number for all units."),
    "003": Notebook("003", "784-64-10, sigmoid, softmax", "mean cross-entropy over the batch",
                    _nb003_params, _nb003_loss, _nb003_manual,
                    note="Each batch of 60 divides by the global m = 60,000, and d_b1 sums d_w1 "
                         "instead of d_s1."),
    "004": Notebook("004", "784-128-10, ReLU, softmax", "mean cross-entropy",
                    _nb004_params, _nb004_loss, _nb004_manual,
                    note="Correct once X is passed as (784, m); the notebook passed (m, 784), "
                         "which is its shape error."),
}


def check_notebook(name, batch=None, seed=0, numeric_samples=6):
    """Compare a notebook's hand-written gradients with autograd (and finite differences on
    sampled elements), in float64, on a small random batch. Returns a ManualReport."""
    nb = NOTEBOOKS[name]
    rng = np.random.default_rng(seed)
    batch = batch or (60 if name == "003" else 16)
    x = rng.random((batch, 784))
    labels = np.arange(batch) % 10                # every class present (002's one-hot needs it)
    params = nb.params(rng)
    alternatives = {k: (lambda fn: lambda p: fn(p, x, labels))(fn)
                    for k, fn in nb.alternatives.items()}
    return compare_manual(lambda p: nb.loss(p, x, labels), params,
                          nb.manual(params, x, labels), alternatives=alternatives,
                          numeric_samples=numeric_samples, seed=seed)


def check_mlp_backprop(sizes=(784, 32, 16, 10), activation="relu", batch=8, seed=0):
    """The shipped general backprop against autograd on an nn.MLP, in float64."""
    from .. import nn
    rng = np.random.default_rng(seed)
    model = nn.MLP(list(sizes), activation=activation)
    for p in model.parameters():       # drawn from `seed`, not the global generator: the same
        p.data = rng.uniform(-1, 1, size=p.shape) / np.sqrt(p.shape[-1])   # point every run
    x = rng.normal(size=(batch, sizes[0]))
    labels = rng.integers(0, sizes[-1], size=batch)
    names = [n for n, _ in model.named_parameters()]
    weights = [layer.weight.data for layer in model.layers]
    biases = [layer.bias.data for layer in model.layers]
    grads_w, grads_b = mlp_backprop(weights, biases, x, labels, activation)
    manual = {}
    for i in range(len(weights)):
        manual[f"layers.{i}.weight"], manual[f"layers.{i}.bias"] = grads_w[i], grads_b[i]

    def loss(p):
        for i, layer in enumerate(model.layers):
            layer.weight, layer.bias = p[f"layers.{i}.weight"], p[f"layers.{i}.bias"]
        return nn.cross_entropy(model(Tensor(x, dtype=np.float64)), labels)

    return compare_manual(loss, {n: manual_param for n, manual_param in
                                 zip(names, [q.data for q in model.parameters()])}, manual,
                          seed=seed)
