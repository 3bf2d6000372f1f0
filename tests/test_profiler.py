"""profile(): a table per op whose counts equal the ops recorded, whose times are non-negative
and add up to the block's wall time at most, and nothing left behind once the block ends."""
import numpy as np

from tinygrad_mnist import Tensor, manual_seed, nn, ops, optim, profile
from tinygrad_mnist.engine import topo_order


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
            for node in topo_order(loss):                # what the engine recorded this step
                if node.op is not None:
                    recorded[node.op.name] = recorded.get(node.op.name, 0) + 1
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


def test_nothing_is_timed_outside_the_block_and_nothing_is_patched():
    from tinygrad_mnist.engine.mode import MODE
    original_forward = ops.Linear.__dict__["forward"]
    with profile() as prof:
        assert ops.Linear.__dict__["forward"] is original_forward     # an observer, no patch
        assert MODE.observers == (prof,)
    assert MODE.observers == ()
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert prof.ops == {}                                  # nothing after the block


def test_a_profile_in_one_thread_changes_nothing_in_another():
    import threading
    seen = {}

    def other():
        x = Tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        seen["done"] = True
    with profile() as prof:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen["done"] and prof.ops == {}


def test_nested_calls_are_counted_once_and_blocks_add_up():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with profile() as prof:
        x.mean().backward()                                # Mean.forward calls Sum.forward
    assert prof.ops["mean"][0] == 1 and "sum" not in prof.ops
    first = prof.wall
    with profile(into=prof):
        x.mean().backward()
    assert prof.ops["mean"][0] == 2 and prof.wall > first
