"""profile(): a table per op whose counts equal the ops recorded, whose times are non-negative
and add up to the block's wall time at most, and nothing left behind once the block ends."""
import numpy as np

from tinygrad_mnist import Tensor, manual_seed, nn, ops, optim, profile, tensor
from tinygrad_mnist.tensor import _topo_order


def test_calls_equal_the_ops_recorded_and_times_add_up():
    manual_seed(0)
    model = nn.MLP([6, 5, 3], dropout=0.2)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = Tensor(np.random.default_rng(0).normal(size=(4, 6))), np.array([0, 2, 1, 2])
    recorded = {}
    with profile() as prof:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.cross_entropy(model(x), y)
            for node in _topo_order(loss):               # what the engine recorded this step
                if node._ctx is not None:
                    recorded[node._ctx.name] = recorded.get(node._ctx.name, 0) + 1
            loss.backward()
            opt.step()
    assert recorded == {"linear": 6, "relu": 3, "dropout": 3, "cross_entropy": 3}
    assert {name: r[0] for name, r in prof.ops.items()} == recorded
    assert {name: r[3] for name, r in prof.ops.items()} == recorded      # one backward each
    rows = prof.rows()
    assert all(forward >= 0 and backward >= 0 for _, _, forward, backward in rows)
    assert sum(forward + backward for _, _, forward, backward in rows) <= prof.wall * 1.000001
    assert prof.bookkeeping > 0
    text = str(prof)
    for name in ("linear", "relu", "dropout", "cross_entropy", "(engine bookkeeping)", "total"):
        assert name in text


def test_nothing_is_timed_outside_the_block():
    original_forward, original_record = ops.Linear.__dict__["forward"], tensor.record
    original_walk = tensor._walk_backward
    with profile() as prof:
        assert ops.Linear.__dict__["forward"] is not original_forward
    assert ops.Linear.__dict__["forward"] is original_forward
    assert tensor.record is original_record and tensor._walk_backward is original_walk
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert prof.ops == {}                                  # nothing after the block


def test_nested_calls_are_counted_once_and_blocks_add_up():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with profile() as prof:
        x.mean().backward()                                # Mean.forward calls Sum.forward
    assert prof.ops["mean"][0] == 1 and "sum" not in prof.ops
    first = prof.wall
    with profile(into=prof):
        x.mean().backward()
    assert prof.ops["mean"][0] == 2 and prof.wall > first
