"""Hand-derived backpropagation: a correct general one for dense MLPs, and the five reference
notebooks' formulas transcribed as written (bugs included), each checked against autograd.

Every notebook entry gives: parameters in the notebook's own layout, its forward pass as
autograd code, the loss it minimizes, and its backward pass as plain NumPy exactly as the
notebook wrote it. `check_notebook(name)` runs gradcheck.compare_manual on them.
"""
from dataclasses import dataclass, field

import numpy as np

from ..gradcheck import compare_manual
from ..tensor import Tensor

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


# ---------------------------------------------------------------- the notebooks, as written

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _onehot_columns(labels, n=10):
    return np.eye(n)[labels].T                     # (10, m), as pd.get_dummies(...).values.T


@dataclass
class Notebook:
    name: str
    network: str
    loss_name: str
    params: callable          # rng, x -> {name: array} in the notebook's layout
    loss: callable            # (params as Tensors, x, labels) -> scalar Tensor
    manual: callable          # (params as arrays, x, labels) -> {name: gradient as applied}
    alternatives: dict = field(default_factory=dict)
    note: str = ""


def _nb000_params(rng):
    return {"W1": rng.normal(size=(64, 784)) * 0.1, "b1": rng.normal(size=(64, 1)) * 0.1,
            "W2": rng.normal(size=(10, 64)) * 0.3, "b2": rng.normal(size=(10, 1)) * 0.1}


def _nb000_forward(p, x):
    a1 = (p["W1"] @ x.T + p["b1"]).sigmoid()       # Z1 = np.dot(W1, X.T) + b1
    return (p["W2"] @ a1 + p["b2"]).sigmoid()       # A2 = sigmoid(np.dot(W2, A1) + b2)


def _nb000_squared_error(p, x, labels):
    diff = _nb000_forward(p, x) - _onehot_columns(labels)
    return (diff * diff).sum() / (2 * len(x))


def _nb000_bce(p, x, labels):
    a2, y = _nb000_forward(p, x), _onehot_columns(labels)
    return -(y * a2.log() + (1 - y) * (1 - a2).log()).sum() / len(x)


def _nb000_manual(p, x, labels):
    W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    Y = _onehot_columns(labels)
    Z1 = np.dot(W1, x.T) + b1
    A1 = _sigmoid(Z1)
    A2 = _sigmoid(np.dot(W2, A1) + b2)
    m = x.shape[0]
    dZ2 = A2 - Y
    dW2 = (1 / m) * np.dot(dZ2, A1.T)
    db2 = (1 / m) * np.sum(dZ2, axis=1, keepdims=True)
    dZ1 = np.dot(W2.T, dZ2) * (A1 * (1 - A1))
    dW1 = (1 / m) * np.dot(dZ1, x)
    db1 = (1 / m) * np.sum(dZ1, axis=1, keepdims=True)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _nb001_params(rng):
    return {"dense1.weights": rng.normal(size=(784, 128)) * 0.05,
            "dense1.biases": rng.normal(size=(1, 128)) * 0.1,
            "dense2.weights": rng.normal(size=(128, 10)) * 0.2,
            "dense2.biases": rng.normal(size=(1, 10)) * 0.1}


def _nb001_loss(p, x, labels):
    from .. import nn
    hidden = (x @ p["dense1.weights"] + p["dense1.biases"]).relu()
    return nn.cross_entropy(hidden @ p["dense2.weights"] + p["dense2.biases"], labels)


def _nb001_manual(p, x, labels):
    out1 = np.dot(x, p["dense1.weights"]) + p["dense1.biases"]
    act1 = np.maximum(0, out1)
    out2 = np.dot(act1, p["dense2.weights"]) + p["dense2.biases"]
    exp_values = np.exp(out2 - np.max(out2, axis=1, keepdims=True))
    dvalues = exp_values / np.sum(exp_values, axis=1, keepdims=True)
    dvalues[range(len(dvalues)), labels] -= 1
    dvalues = dvalues / len(dvalues)
    dweights2 = np.dot(act1.T, dvalues)
    dbiases2 = np.sum(dvalues, axis=0, keepdims=True)
    dinputs = np.dot(dvalues, p["dense2.weights"].T)
    dinputs = dinputs.copy()
    dinputs[out1 <= 0] = 0                         # Relu.backward
    dweights1 = np.dot(x.T, dinputs)
    dbiases1 = np.sum(dinputs, axis=0, keepdims=True)
    return {"dense1.weights": dweights1, "dense1.biases": dbiases1,
            "dense2.weights": dweights2, "dense2.biases": dbiases2}


def _nb002_params(rng):
    return {"W1": rng.normal(size=(10, 784)) * np.sqrt(1 / 784),
            "b1": rng.normal(size=(10, 1)) * np.sqrt(1 / 10),
            "W2": rng.normal(size=(10, 10)) * np.sqrt(1 / 20),
            "b2": rng.normal(size=(10, 1)) * np.sqrt(1 / 10),
            "W3": rng.normal(size=(10, 10)) * np.sqrt(1 / 20),
            "b3": rng.normal(size=(10, 1)) * np.sqrt(1 / 784)}


def _nb002_loss(p, x, labels):
    X = x.T                                         # the notebook keeps samples in columns
    A1 = (p["W1"] @ X + p["b1"]).relu()
    A2 = (p["W2"] @ A1 + p["b2"]).relu()
    log_probs = (p["W3"] @ A2 + p["b3"]).log_softmax(axis=0)
    return -log_probs[labels, np.arange(len(labels))].mean()


def _nb002_manual(p, x, labels):
    W1, b1, W2, b2, W3, b3 = (p[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    X, Y = x.T, labels
    Z1 = W1.dot(X) + b1
    A1 = np.maximum(Z1, 0)
    Z2 = W2.dot(A1) + b2
    A2 = np.maximum(Z2, 0)
    Z3 = W3.dot(A2) + b3
    A3 = np.exp(Z3) / sum(np.exp(Z3))
    m = Y.size
    one_hot_Y = np.zeros((Y.size, Y.max() + 1))
    one_hot_Y[np.arange(Y.size), Y] = 1
    one_hot_Y = one_hot_Y.T
    dZ3 = A3 - one_hot_Y
    dW3 = 1 / m * dZ3.dot(A2.T)
    db3 = 1 / m * np.sum(dZ3)
    dZ2 = W3.T.dot(dZ3) * (Z2 > 0)
    dW2 = 1 / m * dZ2.dot(A1.T)
    db2 = 1 / m * np.sum(dZ2)
    dZ1 = W2.T.dot(dZ2) * (Z1 > 0)
    dW1 = 1 / m * dZ1.dot(X.T)
    db1 = 1 / m * np.sum(dZ1)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


NB003_M = 60000          # the notebook's global m, used inside every minibatch update


def _nb003_params(rng):
    return {"w1": rng.normal(size=(784, 64)) * 0.1, "b1": rng.normal(size=64) * 0.1,
            "w2": rng.normal(size=(64, 10)) * 0.3, "b2": rng.normal(size=10) * 0.1}


def _nb003_loss(p, x, labels):
    from .. import nn
    s1 = (x @ p["w1"] + p["b1"]).sigmoid()
    return nn.cross_entropy(s1 @ p["w2"] + p["b2"], labels)   # the batch average it prints


def _nb003_manual(p, x, labels):
    w1, b1, w2, b2 = p["w1"], p["b1"], p["w2"], p["b2"]
    y = np.eye(10)[labels]
    z1 = np.dot(x, w1) + b1
    s1 = _sigmoid(z1)
    z2 = np.dot(s1, w2) + b2
    e = np.exp(z2)
    y_hat = e / e.sum(axis=1, keepdims=True)
    d_z2 = y_hat - y
    d_w2 = s1.T.dot(d_z2)
    d_b2 = np.sum(d_z2, axis=0)
    d_s1 = _sigmoid(z1) * (1 - _sigmoid(z1)) * d_z2.dot(w2.T)
    d_w1 = x.T.dot(d_s1)
    d_b1 = np.sum(d_w1, axis=0)
    m = NB003_M
    # the update is w -= learning_rate * (d_w / m): the gradient it applies is d_w / m
    return {"w1": d_w1 / m, "b1": d_b1 / m, "w2": d_w2 / m, "b2": d_b2 / m}


def _nb004_params(rng):
    return {"W1": rng.normal(size=(128, 784)) * 0.05, "b1": rng.normal(size=(128, 1)) * 0.1,
            "W2": rng.normal(size=(10, 128)) * 0.2, "b2": rng.normal(size=(10, 1)) * 0.1}


def _nb004_loss(p, x, labels):
    A0 = x.T                # X passed as (784, m): the notebook's call passed (m, 784) and failed
    A1 = (p["W1"] @ A0 + p["b1"]).relu()
    log_probs = (p["W2"] @ A1 + p["b2"]).log_softmax(axis=0)
    return -log_probs[labels, np.arange(len(labels))].sum() / len(labels)


def _nb004_manual(p, x, labels):
    W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    X = x.T
    A0 = X
    Z1 = np.dot(W1, A0) + b1
    A1 = np.maximum(0, Z1)
    Z2 = np.dot(W2, A1) + b2
    expZ = np.exp(Z2 - np.max(Z2, axis=0, keepdims=True))
    A2 = expZ / expZ.sum(axis=0, keepdims=True)
    m = X.shape[1]
    one_hot_y = np.eye(10)[labels.reshape(-1)].T
    dZ2 = A2 - one_hot_y
    dW2 = np.dot(dZ2, A1.T) / m
    db2 = np.sum(dZ2, axis=1, keepdims=True) / m
    dA1 = np.dot(W2.T, dZ2)
    dZ1 = dA1 * (Z1 > 0)
    dW1 = np.dot(dZ1, A0.T) / m
    db1 = np.sum(dZ1, axis=1, keepdims=True) / m
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


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
