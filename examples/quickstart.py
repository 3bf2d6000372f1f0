"""The README's example: a network written as its forward pass, one training step, and a
gradient checked against finite differences."""
import numpy as np

from tinygrad_mnist import Tensor, nn, optim
from tinygrad_mnist.gradcheck import gradcheck


class Net(nn.Module):
    def __init__(self):
        self.hidden, self.out = nn.Linear(784, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.out(self.hidden(x).relu())


rng = np.random.default_rng(0)
x, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, size=64)
model = Net()
opt = optim.Adam(model.parameters(), lr=1e-3)
for step in range(3):
    opt.zero_grad()
    loss = nn.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.4f}")

w = Tensor(rng.normal(size=(5, 3)), requires_grad=True, dtype=np.float64)
print("gradcheck:", gradcheck(lambda w: nn.cross_entropy(Tensor(x[:4, :5], dtype=np.float64) @ w,
                                                         y[:4] % 3), [w]))
