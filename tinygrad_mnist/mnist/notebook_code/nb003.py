"""Notebook 003 (003_350daee8d49d10fa.txt), cells In [257] and In [274], as written, with two
exceptions that keep it differentiable:

- `softmax` (In [257], its lines `for arr in x:` to `return np.array(prob)`) builds Python lists
  of one-element tensors and turns them into an array with `np.array(prob)`: NumPy converts each
  element to a plain float, so the graph is lost (no Tensor rule sees inside a Python list).
  `softmax_vectorized` below gives the same values with NumPy's functions and is used for the
  forward pass on Tensors; the backward pass uses the notebook's own softmax, on arrays.
- `gradient_descent` (In [274]) reads and rebinds the module globals w1, b1, w2, b2 and fuses
  the forward pass, the backward pass and the update. Its lines are split, unchanged, into
  `forward` and `backward` below, taking the parameters as arguments.
"""
import numpy as np

m = 60000
learning_rate = 5


def sigmoid(Z):
    """
    Sigmoid activation function.
    """
    return 1/(1+np.exp(-Z))


def der_sigmoid(Z):
    """
    Derivative of sigmoid activation function.
    """
    return sigmoid(Z) * (1 - sigmoid(Z))


def cross_entropy(Y, Y_hat):
    """
    Binary cross entropy loss function.
    """
    L = -np.log(np.max(Y_hat * Y, axis=1) + 1e-8) #add small number to avoid zero error
    L = np.average(L)
    return L


def softmax(x):
    """Compute softmax values for each sets of scores in x."""

    prob = []
    for arr in x:
        exponentiated = [np.exp(x) for x in arr]
        denominator = np.sum(exponentiated)
        prob.append([x / denominator for x in exponentiated])
    return np.array(prob)


def softmax_vectorized(x):
    """The notebook's softmax without Python lists (not in the notebook)."""
    return np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True)


def forward(X, y, w1, b1, w2, b2, softmax=softmax):
    z1 = np.dot(X,w1) + b1
    s1 = sigmoid(z1)
    z2 = np.dot(s1,w2) + b2
    y_hat = softmax(z2) #these are probabilities
    L = cross_entropy(y,y_hat) # compute loss using model output and true labels
    return z1, s1, z2, y_hat, L


def backward(X, y, w1, b1, w2, b2):
    z1, s1, z2, y_hat, L = forward(X, y, w1, b1, w2, b2)
    #Gradients for Layer 2
    d_z2 = y_hat - y #
    d_w2 = s1.T.dot(d_z2)
    d_b2 = np.sum(d_z2, axis=0)
    d_s1 = der_sigmoid(z1) * d_z2.dot(w2.T)

    #Gradients for Layer 1
    d_w1 = X.T.dot(d_s1)
    d_b1 = np.sum(d_w1, axis=0)

    # Use gradients to update weights and biases: w = w - learning_rate * (d_w / m), so the
    # gradient each update applies is d_w / m
    return d_w1 / m, d_b1 / m, d_w2 / m, d_b2 / m
