"""Learning-rate schedules with PyTorch's formulas, in closed form.

A scheduler sets the learning rate of every parameter group of its optimizer: when it is made
(the rate of step 0) and at each `step()`, called once per epoch or per batch after
`optimizer.step()`. Each rate is computed from the group's initial rate and the step count
alone, never from the previous rate, so a schedule saved with `state_dict()` and loaded again
continues exactly.

    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    for batch in loader:
        ...
        optimizer.step()
        scheduler.step()
"""
import bisect
import math

import numpy as np


class LRScheduler:
    """Base class: subclasses give `lr_at(base_lr, step)`. With last_epoch (as PyTorch's), the
    schedule starts after that step: the rates of step last_epoch + 1 are set."""

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr, step):
        raise NotImplementedError

    def step(self):
        """Advance one step and set each group's learning rate for it."""
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base, self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rate of each group, as the last step set it."""
        return list(self._last_lr)

    def state_dict(self):
        """The step count and the initial rates, as arrays (ready for an .npz beside the
        optimizer's state)."""
        return {"last_epoch": np.array(self.last_epoch, dtype=np.int64),
                "base_lrs": np.array(self.base_lrs, dtype=np.float64)}

    def load_state_dict(self, state):
        """Continue from a state_dict(): the optimizer's rates are set for its step again.
        Everything is checked before anything changes."""
        name = type(self).__name__
        unexpected = set(state) - {"last_epoch", "base_lrs"}
        if unexpected or "last_epoch" not in state:
            raise KeyError(f"{name}.load_state_dict: expected 'last_epoch' and 'base_lrs', got "
                           f"{sorted(state)}")
        last_epoch = np.asarray(state["last_epoch"])
        base_lrs = np.asarray(state.get("base_lrs", self.base_lrs), dtype=np.float64)
        if last_epoch.shape != () or last_epoch.dtype.kind not in "iu" or last_epoch < -1:
            raise ValueError(f"{name}.load_state_dict: 'last_epoch' must be one integer, got "
                             f"{last_epoch!r}")
        if base_lrs.shape != (len(self.base_lrs),):
            raise ValueError(f"{name}.load_state_dict: {base_lrs.size} base rates for "
                             f"{len(self.base_lrs)} parameter groups")
        self.last_epoch, self.base_lrs = int(last_epoch), base_lrs.tolist()
        self._apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (step // step_size)"""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, step):
        return base_lr * self.gamma ** (step // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones reached by step)"""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, step):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2"""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, step):
        return self.eta_min + (base_lr - self.eta_min) * (
            1 + math.cos(math.pi * step / self.T_max)) / 2


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(step, total_iters) /
    total_iters): a linear warm-up (or cool-down) over total_iters steps, then constant."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must lie in (0, 1] and end_factor in "
                             f"[0, 1], got {start_factor} and {end_factor}")
        if not isinstance(total_iters, int) or total_iters < 1:
            raise ValueError(f"LinearLR: total_iters must be a positive int, got "
                             f"{total_iters!r}")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, step):
        done = min(step, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


class OneCycleLR(LRScheduler):
    """The one-cycle policy with PyTorch's defaults: the rate rises from max_lr / div_factor
    to max_lr over the first pct_start of total_steps, then anneals to
    max_lr / (div_factor * final_div_factor), each phase along a half cosine (or a line with
    anneal_strategy="linear"). Momentum (SGD's momentum, Adam's first beta) cycles the other
    way, between max_momentum and base_momentum, when cycle_momentum is on. Stepping beyond
    total_steps is an error, as in PyTorch."""

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, last_epoch=-1):
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"OneCycleLR: total_steps must be a positive int, got "
                             f"{total_steps!r}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must lie in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"OneCycleLR: {len(max_lrs)} max_lr values for {len(groups)} "
                             f"parameter groups")
        self.total_steps, self.anneal = total_steps, anneal_strategy
        self.cycle_momentum = cycle_momentum
        self.momentum_key = None
        if cycle_momentum:
            self.momentum_key = "betas" if "betas" in groups[0] else "momentum"
            if self.momentum_key not in groups[0] or (
                    self.momentum_key == "momentum" and not groups[0]["momentum"]):
                raise ValueError("OneCycleLR: cycle_momentum needs an optimizer with momentum "
                                 "(SGD with momentum > 0, Adam, AdamW); pass "
                                 "cycle_momentum=False")
        # each phase: (last step, (rate factor at its start, at its end)) per group
        self.phase_ends = [float(pct_start * total_steps) - 1, total_steps - 1]
        for group, top in zip(groups, max_lrs):
            group["initial_lr"] = top / div_factor
            group["max_lr"], group["min_lr"] = top, top / div_factor / final_div_factor
            if cycle_momentum:
                group["base_momentum"], group["max_momentum"] = base_momentum, max_momentum
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, fraction):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def _phase(self, step):
        """(phase index, fraction of it done) at `step`."""
        start = 0
        for i, end in enumerate(self.phase_ends):
            if step <= end or i == len(self.phase_ends) - 1:
                return i, (step - start) / (end - start) if end != start else 1.0
            start = end

    def lr_at(self, base_lr, step):
        raise NotImplementedError      # each group has its own max and min: see _apply

    def _apply(self):
        step = self.last_epoch
        if step > self.total_steps:             # one step past the end, as PyTorch allows
            raise ValueError(f"OneCycleLR: tried to step {step} times; total_steps is "
                             f"{self.total_steps}")
        phase, fraction = self._phase(step)
        for group in self.optimizer.param_groups:
            rates = [(group["initial_lr"], group["max_lr"]),
                     (group["max_lr"], group["min_lr"])][phase]
            group["lr"] = self._anneal(*rates, fraction)
            if self.cycle_momentum:
                momenta = [(group["max_momentum"], group["base_momentum"]),
                           (group["base_momentum"], group["max_momentum"])][phase]
                value = self._anneal(*momenta, fraction)
                if self.momentum_key == "betas":
                    group["betas"] = (value,) + tuple(group["betas"][1:])
                else:
                    group["momentum"] = value
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
