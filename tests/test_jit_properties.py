"""A property of jit: random training runs (models, optimizers, schedules, freezes, seeds, value
reads, changes between calls) give the same numbers jitted as eagerly, after every call, or
the jitted run says with a JitWarning that it ran eagerly.

Each scenario is drawn from its seed; a failure names the seed and the scenario, and
`pytest tests/test_jit_properties.py -k "warn[17]"` replays it; JIT_SCENARIOS=800 runs more."""
import os
import warnings

import numpy as np
import pytest

from tinygrad_mnist import JitWarning, Tensor, jit, manual_seed, nn, no_grad, optim
from tinygrad_mnist.optim import lr_scheduler

SCENARIOS = int(os.environ.get("JIT_SCENARIOS", 60))
CALLS = 7
TOL = dict(rtol=2e-6, atol=2e-7)

OPTIMIZERS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda ps: optim.RMSProp(ps, lr=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
}
# what the step does besides the usual zero_grad, forward, backward, step
BODIES = ["plain", "grad to none", "noise", "decay by hand", "scheduler inside", "read value",
          "accumulate", "seed inside", "two losses"]
# what happens between calls
BETWEEN = ["nothing", "freeze", "unfreeze", "scale weights", "eval", "train", "batch size",
           "reseed", "lr", "replace layer", "dropout p"]
FOLLOWED = {"nothing", "scale weights", "reseed", "lr"}     # changes that need no recording


def draw(seed):
    rng = np.random.default_rng([2024, seed])
    hidden = [int(n) for n in rng.integers(2, 7, rng.integers(1, 3))]
    return {
        "sizes": [int(rng.integers(2, 6))] + hidden + [int(rng.integers(2, 5))],
        "activation": str(rng.choice(["relu", "tanh", "sigmoid"])),
        "dropout": float(rng.choice([0.0, 0.0, 0.3])),
        "optimizer": str(rng.choice(sorted(OPTIMIZERS))),
        "body": str(rng.choice(BODIES)),
        "between": [str(rng.choice(BETWEEN)) if rng.random() < 0.6 else "nothing"
                    for _ in range(CALLS)],
        "batches": [int(rng.integers(1, 6)) for _ in range(CALLS)],
    }


class World:
    def __init__(self, scenario):
        manual_seed(11)
        self.s = scenario
        self.model = nn.MLP(scenario["sizes"], activation=scenario["activation"],
                            dropout=scenario["dropout"])
        self.named = dict(self.model.named_parameters())
        self.opt = OPTIMIZERS[scenario["optimizer"]](self.model.parameters())
        self.schedule = lr_scheduler.StepLR(self.opt, step_size=2, gamma=0.7)
        self.batch = 4

    def tensors(self):
        found = dict(self.named)
        found.update({f"now {k}": v for k, v in self.model.named_parameters()})
        return found

    def between(self, i):
        action, layers = self.s["between"][i], self.model.layers
        if action == "freeze":
            for p in (layers[0].weight, layers[0].bias):
                p.requires_grad = False
        elif action == "unfreeze":
            for p in (layers[0].weight, layers[0].bias):
                p.requires_grad = True
        elif action == "scale weights":
            layers[-1].weight.data = layers[-1].weight.data * 0.9
        elif action == "eval":
            self.model.eval()
        elif action == "train":
            self.model.train()
        elif action == "batch size":
            self.batch = self.s["batches"][i]
        elif action == "reseed":
            manual_seed(i)
        elif action == "lr":
            self.opt.lr = 0.01 * (i + 1)
        elif action == "replace layer":
            manual_seed(100 + i)
            old = layers[-1]
            layers[-1] = nn.Linear(old.in_features, old.out_features)
            self.named[f"layer {i}.weight"] = layers[-1].weight
            self.opt = OPTIMIZERS[self.s["optimizer"]](self.model.parameters())
            self.schedule = lr_scheduler.StepLR(self.opt, step_size=2, gamma=0.7)
        elif action == "dropout p" and self.model.drop is not None:
            self.model.drop.p = 0.1 + 0.05 * i

    def step(self, x, y):
        body = self.s["body"]
        if body == "grad to none":
            for p in self.model.parameters():
                p.grad = None
        elif body != "accumulate":
            self.opt.zero_grad()
        if body == "seed inside":
            manual_seed(5)
        out = self.model(Tensor.from_numpy(x))
        if body == "noise" or body == "seed inside":
            out = out + 0.1 * Tensor.randn(*out.shape)
        loss = nn.cross_entropy(out, y)
        if body == "two losses":
            loss = loss + (out * out).mean() * 0.01
        if body == "read value" and loss.item() > 1.0:
            loss = loss * 0.5
        loss.backward()
        self.opt.step()
        if body == "decay by hand":
            with no_grad():
                for p in self.model.parameters():
                    p *= 0.999
        if body == "scheduler inside":
            self.schedule.step()
        return loss, out.detach()


@pytest.mark.parametrize("scenario", range(SCENARIOS))
def test_random_training_runs_equal_eager_or_warn(scenario):
    s = draw(scenario)
    eager, jitted = World(s), World(s)
    step_j = jit(jitted.step)
    rng = np.random.default_rng(scenario)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(CALLS):
            eager.between(i)
            jitted.between(i)
            x = rng.standard_normal((eager.batch, s["sizes"][0])).astype(np.float32)
            y = rng.integers(0, s["sizes"][-1], eager.batch)
            manual_seed([3, i])
            loss_e, out_e = eager.step(x, y)
            manual_seed([3, i])
            loss_j, out_j = step_j(x, y)
            where = f"scenario {scenario} ({s}), call {i}"
            np.testing.assert_allclose(loss_j.item(), loss_e.item(), **TOL, err_msg=where)
            np.testing.assert_allclose(out_j.numpy(), out_e.numpy(), **TOL, err_msg=where)
            te, tj = eager.tensors(), jitted.tensors()
            assert te.keys() == tj.keys(), where
            for name in te:
                np.testing.assert_allclose(tj[name].numpy(), te[name].numpy(), **TOL,
                                           err_msg=f"{name}: {where}")
                ge, gj = te[name].grad, tj[name].grad
                assert (ge is None) == (gj is None), f"{name}.grad: {where}"
                if ge is not None:
                    np.testing.assert_allclose(gj, ge, **TOL, err_msg=f"{name}.grad: {where}")
    warned = [w for w in caught if issubclass(w.category, JitWarning)]
    if s["body"] == "read value":
        assert warned                                   # it could not replay: it said so
        return
    assert not warned, f"scenario {scenario} ({s})"
    # a call after a change nothing guards is a replay (the test is not vacuous)
    if any(action in FOLLOWED for action in s["between"][1:]):
        assert step_j.replays > 0, f"scenario {scenario} ({s})"
