"""What a private training run spends: (epsilon, delta) of DP-SGD with Poisson sampling, from
Google's dp-accounting library (an optional extra: pip install "tinygrad_mnist[privacy]").

    privacy.epsilon(noise_multiplier=1.1, sample_rate=256 / 60000, steps=14040, delta=1e-5)
    privacy.noise_multiplier_for(epsilon=2.93, sample_rate=..., steps=..., delta=1e-5)

Each step is a Poisson-sampled Gaussian mechanism (sampling rate q, noise sigma); `steps` of
them are composed. "rdp" is the Renyi accountant (Mironov 2017; what Opacus and TF Privacy
report by default), "pld" the privacy-loss-distribution one (tighter).

A training run asks for its whole ledger at once (`ledger(..., apart=True)`): the noise and
the epsilon after every epoch, worked out in a process of its own, because importing the
library brings SciPy with it (about 80 MB) that the training process would then hold to its
end. The child reads the question as JSON on stdin and answers on stdout (`_answer`).
"""
import importlib.util
import json
import math
import os
import subprocess
import sys

__all__ = ["epsilon", "noise_multiplier_for", "ledger"]


def _library():
    try:
        import dp_accounting
    except ImportError:
        raise ImportError("privacy: the accountant needs the dp-accounting package: "
                          "pip install \"tinygrad_mnist[privacy]\" (or dp-accounting)") from None
    return dp_accounting


def _check(noise_multiplier, sample_rate, steps, delta):
    if not 0 < sample_rate <= 1 or steps < 0 or not 0 < delta < 1 or noise_multiplier < 0:
        raise ValueError(f"privacy: need 0 < sample_rate <= 1, steps >= 0, 0 < delta < 1 and "
                         f"noise_multiplier >= 0; got sample_rate={sample_rate}, "
                         f"steps={steps}, delta={delta}, noise_multiplier={noise_multiplier}")


def epsilon(noise_multiplier, sample_rate, steps, delta, accountant="rdp"):
    """The epsilon of `steps` DP-SGD steps at (noise_multiplier, sample_rate), for delta."""
    _check(noise_multiplier, sample_rate, steps, delta)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    dpa = _library()
    if accountant == "rdp":
        counter = dpa.rdp.RdpAccountant()
    elif accountant == "pld":
        counter = dpa.pld.PLDAccountant()
    else:
        raise ValueError(f"privacy: accountant must be 'rdp' or 'pld', got {accountant!r}")
    step = dpa.PoissonSampledDpEvent(sample_rate, dpa.GaussianDpEvent(noise_multiplier))
    counter.compose(dpa.SelfComposedDpEvent(step, int(steps)))
    return float(counter.get_epsilon(delta))


def noise_multiplier_for(epsilon_target, sample_rate, steps, delta, accountant="rdp",
                         tolerance=1e-3):
    """The smallest noise multiplier (within `tolerance`) whose epsilon after `steps` is at
    most epsilon_target: epsilon falls as the noise grows, so a bisection finds it."""
    if epsilon_target <= 0:
        raise ValueError(f"privacy: the target epsilon must be positive, got {epsilon_target}")
    low, high = 0.0, 1.0
    while epsilon(high, sample_rate, steps, delta, accountant) > epsilon_target:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"privacy: no noise multiplier up to 1e4 reaches epsilon "
                             f"{epsilon_target} in {steps} steps at sampling rate "
                             f"{sample_rate}")
    while high - low > tolerance:
        middle = (low + high) / 2
        if epsilon(middle, sample_rate, steps, delta, accountant) > epsilon_target:
            low = middle
        else:
            high = middle
    return high


def ledger(sample_rate, steps_per_epoch, epochs, delta, noise_multiplier=None,
           epsilon_target=None, apart=False):
    """(noise multiplier, [epsilon after epoch 1, ..., after `epochs`]) of a run: the noise
    given, or the least that spends at most epsilon_target over all the epochs. apart=True
    works it out in a child process (the same numbers, without SciPy in this one)."""
    question = dict(sample_rate=sample_rate, steps_per_epoch=steps_per_epoch, epochs=epochs,
                    delta=delta, noise_multiplier=noise_multiplier,
                    epsilon_target=epsilon_target)
    if (noise_multiplier is None) == (epsilon_target is None):
        raise ValueError("privacy.ledger: give one of noise_multiplier and epsilon_target")
    if not apart:
        if noise_multiplier is None:
            noise_multiplier = noise_multiplier_for(epsilon_target, sample_rate,
                                                    steps_per_epoch * epochs, delta)
        return noise_multiplier, [epsilon(noise_multiplier, sample_rate, steps_per_epoch * k,
                                          delta) for k in range(1, epochs + 1)]
    if importlib.util.find_spec("dp_accounting") is None:
        _library()                                 # the same ImportError, without a child
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    child = subprocess.run([sys.executable, "-c", f"from {__name__} import _answer; _answer()"],
                           input=json.dumps(question), capture_output=True, text=True, env=env)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError(f"privacy.ledger: the accountant's process failed: {last}")
    answer = json.loads(child.stdout)
    return answer["noise_multiplier"], answer["epsilons"]


def _answer():
    """The child's side of ledger(apart=True): the question from stdin, the answer to stdout."""
    sigma, spent = ledger(**json.loads(sys.stdin.read()))
    print(json.dumps({"noise_multiplier": sigma, "epsilons": spent}))
