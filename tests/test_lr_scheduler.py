"""Learning-rate schedules against PyTorch's documented formulas, written out here step by
step, and their state saved and restored mid-schedule."""
import math

import numpy as np
import pytest

from tinygrad_mnist import Tensor, optim
from tinygrad_mnist.optim import lr_scheduler


def _rates(make_scheduler, steps, optimizer=None, key="lr"):
    """The rate (or another group option) in force at each of `steps` optimizer steps."""
    optimizer = optimizer or optim.SGD([Tensor([1.0], requires_grad=True)], lr=0.1)
    scheduler = make_scheduler(optimizer)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0][key])
        assert scheduler.get_last_lr() == [optimizer.param_groups[0]["lr"]]
        optimizer.step()
        scheduler.step()
    return seen


def test_step_lr():
    got = _rates(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 8)
    assert got == pytest.approx([0.1 * 0.5 ** (t // 3) for t in range(8)])


def test_multi_step_lr():
    got = _rates(lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.1), 7)
    assert got == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])


def test_cosine_annealing_lr_and_its_second_period():
    # eta_t = eta_min + (eta_max - eta_min) (1 + cos(pi t / T_max)) / 2
    got = _rates(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01), 25)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(25)]
    assert got == pytest.approx(expected, abs=1e-15)
    assert got[10] == pytest.approx(0.01) and got[20] == pytest.approx(0.1)


def test_linear_lr_warm_up():
    got = _rates(lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4), 7)
    assert got == pytest.approx([0.025, 0.04375, 0.0625, 0.08125, 0.1, 0.1, 0.1])


def _one_cycle(t, total, top, pct=0.3, div=25.0, final=1e4, start_end=None):
    """PyTorch's two phases, each a half cosine: (initial -> max) then (max -> min)."""
    initial, low = top / div, top / div / final
    first_end = pct * total - 1
    if start_end is None:
        start_end = ((initial, top), (top, low))
    if t <= first_end:
        (a, b), fraction = start_end[0], t / first_end
    else:
        (a, b), fraction = start_end[1], (t - first_end) / (total - 1 - first_end)
    return b + (a - b) / 2 * (math.cos(math.pi * fraction) + 1)


def test_one_cycle_lr_rates_and_momentum_as_pytorchs_defaults():
    opt = optim.SGD([Tensor([1.0], requires_grad=True)], lr=0.1, momentum=0.9)
    rates = _rates(lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=20), 20, opt)
    assert rates == pytest.approx([_one_cycle(t, 20, 1.0) for t in range(20)], abs=1e-15)
    assert rates[0] == pytest.approx(0.04) and max(rates) == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.04 / 1e4)           # max_lr / div / final_div
    opt = optim.SGD([Tensor([1.0], requires_grad=True)], lr=0.1, momentum=0.9)
    momenta = _rates(lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=20), 20, opt,
                     key="momentum")
    expected = [_one_cycle(t, 20, 1.0, start_end=((0.95, 0.85), (0.85, 0.95))) for t in range(20)]
    assert momenta == pytest.approx(expected, abs=1e-15)


def test_one_cycle_cycles_adams_first_beta_and_refuses_plain_sgd():
    opt = optim.Adam([Tensor([1.0], requires_grad=True)])
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    assert opt.param_groups[0]["betas"] == (0.95, 0.999)
    for _ in range(10):
        opt.step()
        scheduler.step()
    with pytest.raises(ValueError, match="total_steps"):
        scheduler.step()                               # stepped beyond the cycle
    with pytest.raises(ValueError, match="momentum"):
        lr_scheduler.OneCycleLR(optim.SGD([Tensor([1.0], requires_grad=True)], lr=0.1),
                                max_lr=1.0, total_steps=10)


def test_a_scheduler_sets_each_groups_rate_from_its_own_base():
    a, b = Tensor([1.0], requires_grad=True), Tensor([1.0], requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    scheduler = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scheduler.step()
    assert scheduler.get_last_lr() == [0.05, 0.5]


@pytest.mark.parametrize("make", [
    lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7),
    lambda o: lr_scheduler.StepLR(o, step_size=2),
    lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=6),
    lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=12),
])
def test_saved_with_the_optimizer_and_loaded_the_schedule_continues_exactly(make):
    def fresh():
        opt = optim.SGD([Tensor(np.ones(3), requires_grad=True)], lr=0.1, momentum=0.9)
        return opt, make(opt)

    straight, scheduler = fresh()
    for _ in range(4):
        straight.step()
        scheduler.step()
    saved = {**straight.state_dict(), **{f"sched.{k}": v
                                         for k, v in scheduler.state_dict().items()}}
    expected = []
    for _ in range(5):
        straight.step()
        scheduler.step()
        expected.append((straight.lr, straight.param_groups[0]["momentum"]))

    resumed, scheduler2 = fresh()
    scheduler2.load_state_dict({k[6:]: v for k, v in saved.items() if k.startswith("sched.")})
    resumed.load_state_dict({k: v for k, v in saved.items() if not k.startswith("sched.")})
    got = []
    for _ in range(5):
        resumed.step()
        scheduler2.step()
        got.append((resumed.lr, resumed.param_groups[0]["momentum"]))
    assert got == expected


def test_bad_scheduler_arguments_are_errors():
    opt = optim.SGD([Tensor([1.0], requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="start_factor"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(KeyError, match="last_epoch"):
        lr_scheduler.StepLR(opt, step_size=1).load_state_dict({"epoch": np.array(3)})
