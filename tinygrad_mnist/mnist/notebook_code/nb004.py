"""Notebook 004 (004_6ce051bb7a202605.txt), cells In [4] and In [6], as written (the methods
that compute: forward, one-hot, backward, loss). Samples are columns. Runs on Tensors unchanged
once X is passed as (784, m): the notebook's own call, `model.gradient_descent(X_normal_train,
Y_train)` in In [11], passes (m, 784), and `np.dot(self.W1, self.A0)` fails there: its shape
error."""
import numpy as np


def ReLU(Z):
    return np.maximum(0, Z)


def softmax(Z):
    expZ = np.exp(Z - np.max(Z, axis=0, keepdims=True))
    return expZ / expZ.sum(axis=0, keepdims=True)


class NN:
    def __init__(self, input_size=784, hidden_size=128, output_size=10, learning_rate=0.01):
        # Initialized basic stats of NN
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.learning_rate = learning_rate

        # Initialized weights and biases
        self.W1 = np.random.randn(hidden_size, input_size) * 0.01
        self.b1 = np.zeros((hidden_size, 1))
        self.W2 = np.random.randn(output_size, hidden_size) * 0.01
        self.b2 = np.zeros((output_size, 1))

        # Initialized activations and gradients
        self.A0 = None
        self.Z1 = None
        self.A1 = None
        self.Z2 = None
        self.A2 = None
        self.dW2 = None
        self.db2 = None
        self.dW1 = None
        self.db1 = None

    # do the forward pass and evaluate the values of A0, Z1, A1, Z2, A2
    def forward_propagation(self, X):
        self.A0 = X
        self.Z1 = np.dot(self.W1, self.A0) + self.b1
        self.A1 = ReLU(self.Z1)
        self.Z2 = np.dot(self.W2, self.A1) + self.b2
        self.A2 = softmax(self.Z2)
        return self.A2

    def one_hot(self, y):
        one_hot_y = np.eye(self.output_size)[y.reshape(-1)]
        return one_hot_y.T

    # calculate the derivative of the loss function with respect to W2, b2, W1, b1 in dW2, db2, dW1, db1 respectively
    def backward_propagation(self, X, y):
        m = X.shape[1]
        one_hot_y = self.one_hot(y)
        self.dZ2 = self.A2 - one_hot_y
        self.dW2 = np.dot(self.dZ2, self.A1.T) / m
        self.db2 = np.sum(self.dZ2, axis=1, keepdims=True) / m
        self.dA1 = np.dot(self.W2.T, self.dZ2)
        self.dZ1 = self.dA1 * (self.Z1 > 0)
        self.dW1 = np.dot(self.dZ1, self.A0.T) / m
        self.db1 = np.sum(self.dZ1, axis=1, keepdims=True) / m

    # evaluate loss using cross-entropy-loss formula.
    def cross_entropy_loss(self, X, y):
        m = X.shape[1]
        one_hot_y = self.one_hot(y)
        log_likelihood = -np.log(self.A2[y, range(m)])
        loss = np.sum(log_likelihood) / m
        return loss
