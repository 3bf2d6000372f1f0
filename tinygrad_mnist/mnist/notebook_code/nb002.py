"""Notebook 002 (002_6029dbfb20e98c4a.txt), cell In [4]'s functions, as written. Samples are
columns. Runs on Tensors unchanged: `sum(np.exp(Z))` is Python's sum over the rows, which
iterating a Tensor gives; `W1.dot(X)` is Tensor.dot."""
import numpy as np


def ReLU(Z):
    return np.maximum(Z, 0)


def softmax(Z):
    soft = np.exp(Z) / sum(np.exp(Z))
    return soft


def forward_prop(W1, b1, W2, b2, W3, b3, X):

    Z1 = W1.dot(X) + b1
    A1 = ReLU(Z1)
    Z2 = W2.dot(A1) + b2
    A2 = ReLU(Z2)
    Z3 = W3.dot(A2) + b3
    A3 = softmax(Z3)

    return Z1, A1, Z2, A2, Z3, A3


def deriv_ReLU(Z):
    return Z > 0


def one_hot(Y):

    one_hot_Y = np.zeros((Y.size, Y.max() + 1))
    one_hot_Y[np.arange(Y.size), Y] = 1
    one_hot_Y = one_hot_Y.T

    return one_hot_Y


def back_prop(Z1, A1, Z2, A2, Z3, A3, W1, W2, W3, X, Y):

    m = Y.size
    one_hot_Y = one_hot(Y)
    dZ3 = A3 - one_hot_Y
    dW3 = 1 / m * dZ3.dot(A2.T)
    db3 = 1 / m * np.sum(dZ3)
    dZ2 = W3.T.dot(dZ3) * deriv_ReLU(Z2)
    dW2 = 1 / m * dZ2.dot(A1.T)
    db2 = 1 / m * np.sum(dZ2)
    dZ1 = W2.T.dot(dZ2) * deriv_ReLU(Z1)
    dW1 = 1 / m * dZ1.dot(X.T)
    db1 = 1 / m * np.sum(dZ1)

    return dW1, db1, dW2, db2, dW3, db3
