"""`train --dp`: differentially private training (DP-SGD, privacy/) in the trainer.

Batches are Poisson samples (each image in each batch with probability batch_size / n, about
n / batch_size batches an epoch), each example's gradient is clipped to --max-grad-norm and
Gaussian noise of --noise-multiplier times that is added to their sum; or, with --epsilon,
the accountant picks the least noise that spends at most epsilon (for --delta) over all
--epochs. Each epoch reports the epsilon spent so far; metrics.json keeps epsilon, delta and
the noise multiplier. The steps run eagerly (the per-example norms are heard through the
engine's observer seam, and a jit replays a step only while nobody observes).
"""

from .. import nn, privacy
from ..engine import Tensor


def check(config, n_train=None):
    """What --dp needs, and what breaks its guarantee, named before anything runs."""
    if not config.dp:
        for name in ("epsilon", "noise_multiplier"):
            if getattr(config, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} is an option of --dp; add --dp "
                                 f"to train privately")
        return
    if (config.epsilon is None) == (config.noise_multiplier is None):
        raise ValueError("--dp needs one of --epsilon (the budget: the noise is chosen for it) "
                         "or --noise-multiplier (the noise: the epsilon spent is reported)")
    if config.arch == "cnn":
        raise ValueError("--dp: --arch cnn normalizes with batch norm in training mode, which "
                         "mixes the examples of a batch (each one's gradient then depends on "
                         "the others, and clipping bounds nothing); use --arch mlp or lenet5")
    if n_train is not None and config.batch_size >= n_train:
        raise ValueError(f"--dp: --batch-size {config.batch_size} must be below the "
                         f"{n_train} training images (it is the expected Poisson batch)")


class Plan:
    """The run's sampling rate, steps and noise, and the epsilon spent after k epochs."""

    def __init__(self, config, n_train, noise_multiplier=None):
        self.n, self.delta, self.clip = n_train, config.delta, config.max_grad_norm
        self.sample_rate = config.batch_size / n_train
        self.steps_per_epoch = max(1, round(1 / self.sample_rate))
        if noise_multiplier is None:                       # a resumed run keeps its noise
            noise_multiplier = config.noise_multiplier
        # the whole run's ledger at once, in a process of its own: the accountant's library
        # brings SciPy (about 80 MB), which this process would hold while it trains
        self.noise_multiplier, self.spent = privacy.ledger(
            self.sample_rate, self.steps_per_epoch, config.epochs, config.delta,
            noise_multiplier=noise_multiplier,
            epsilon_target=config.epsilon if noise_multiplier is None else None, apart=True)

    def epsilon(self, epochs):
        """The epsilon spent after `epochs` epochs."""
        if 1 <= epochs <= len(self.spent):
            return self.spent[epochs - 1]
        return privacy.epsilon(self.noise_multiplier, self.sample_rate,
                               self.steps_per_epoch * epochs, self.delta)

    def batches(self, rng):
        """One epoch's Poisson batches of indices."""
        return privacy.poisson_batches(self.n, self.sample_rate, rng, self.steps_per_epoch)


def private_step(model, optimizer, plan, label_smoothing=0.0):
    """step(x, y) -> (mean loss, logits), or (None, None) for an empty batch: one DP-SGD
    update on a Poisson batch (an empty one still adds its noise)."""
    dp = privacy.DPOptimizer(optimizer, model, plan.noise_multiplier, plan.clip,
                             expected_batch_size=plan.sample_rate * plan.n)
    seen = {}

    def losses(m, x, y):
        seen["logits"] = logits = m(x)
        seen["losses"] = out = nn.cross_entropy(logits, y, reduction="none",
                                                label_smoothing=label_smoothing)
        return out

    def step(x, y):
        seen.clear()
        dp.step(losses, Tensor.from_numpy(x), y)
        if len(y) == 0:
            return None, None
        return seen["losses"].detach().mean(), seen["logits"].detach()
    return step
