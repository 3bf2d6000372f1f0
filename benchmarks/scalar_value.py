"""A micrograd-style scalar autograd in pure Python: the baseline of the scalar-graph benchmark.

Each Value holds a float, its gradient, its children and a closure that passes its gradient
on, as in micrograd; the topological sort is iterative so that a graph of a million nodes does
not hit Python's recursion limit.
"""
import math



class Value:
    __slots__ = ("data", "grad", "_children", "_backward")

    def __init__(self, data, children=()):
        self.data, self.grad, self._children, self._backward = data, 0.0, children, None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))

        def backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))

        def backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def backward():
            self.grad += (1 - t * t) * out.grad
        out._backward = backward
        return out

    def backward(self):
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((child, False) for child in node._children)
        self.grad = 1.0
        for node in reversed(order):
            if node._backward is not None:
                node._backward()
