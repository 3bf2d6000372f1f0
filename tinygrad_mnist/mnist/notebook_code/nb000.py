"""Notebook 000 (000_1174487bf11ffddd.txt), cells In [9], In [12] and In [13], as written.
Samples are rows of X; activations are columns. Runs on Tensors unchanged."""
import numpy as np


# Activation function (sigmoid)\n",
def sigmoid(Z):
    return 1 / (1 + np.exp(-Z))


def forward_propagation(X, W1, b1, W2, b2):
    Z1 = np.dot(W1, X.T) + b1
    A1 = sigmoid(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = sigmoid(Z2)
    return {"Z1": Z1, "A1": A1, "Z2": Z2, "A2": A2}


def backward_propagation(X, Y, cache, W1, W2):
    m = X.shape[0]
    A1 = cache["A1"]
    A2 = cache["A2"]
    # Calculate gradients for the second layer
    dZ2 = A2 - Y
    dW2 = (1 / m) * np.dot(dZ2, A1.T)
    db2 = (1 / m) * np.sum(dZ2, axis=1, keepdims=True)
    # Calculate gradients for the first layer
    dZ1 = np.dot(W2.T, dZ2) * (A1 * (1 - A1))
    dW1 = (1 / m) * np.dot(dZ1, X)
    db1 = (1 / m) * np.sum(dZ1, axis=1, keepdims=True)
    return {
        "dW1": dW1,
        "db1": db1,
        "dW2": dW2,
        "db2": db2
    }
