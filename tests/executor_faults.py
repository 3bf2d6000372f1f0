"""Trial functions that misbehave on purpose, importable by executor workers (tests/ is on
their path): used by test_executors.py."""
import os
import signal

from tinygrad_mnist.mnist import sweep, train


def killed_after_first_checkpoint(trial):
    """sweep_trial, except that the first attempt of trial-001 SIGKILLs its own worker right
    after its first checkpoint is on disk; the marker file says it happened."""
    marker = os.path.join(os.path.dirname(trial["out"]), "killed-once")
    if trial["key"] == "trial-001" and not os.path.exists(marker):
        save = train.save_checkpoint

        def save_then_die(*args, **kwargs):
            save(*args, **kwargs)
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        train.save_checkpoint = save_then_die
    return sweep.sweep_trial(trial)


def interrupted_at_second(trial):
    """Records that it ran; the second trial is a Ctrl-C."""
    with open(os.path.join(trial["log"], trial["key"]), "w"):
        pass
    if trial["key"] == "t1" and not os.path.exists(os.path.join(trial["log"], "again")):
        raise KeyboardInterrupt
    return {"key": trial["key"], "value": trial["value"] * 2}
