"""How many BLAS threads a training run uses: a count the user fixed (`--threads N`), or
every core, fewer while other programs keep cores busy. The machine policy of the trainer;
the engine only offers set_num_threads."""
import math
import os
import time

from ..engine.kernels.blas import get_num_threads, set_num_threads

_fixed = [None]        # the count --threads fixed, or None (load-aware)


def fix_threads(count):
    """Use `count` BLAS threads from now on (None: the library's own count, and load-aware
    loops may change it)."""
    _fixed[0] = count
    set_num_threads(count)


class LoadAwareThreads:
    """The thread count for a loop of steps on a machine shared with other programs.

    OpenBLAS splits every product across its threads and waits for the slowest: when another
    program holds a core, the thread that shares it stalls the product for a scheduler time
    slice, and on 2 cores training ran 2.5-4x slower. Every `interval` seconds, `step()`
    reads how much CPU the other programs used meanwhile (Linux: /proc/stat less this
    process's own time); with `busy` cores or more of it, products use the cores that are
    left; once the others are idle again, every core. Without /proc/stat, or with a count
    fixed by `fix_threads` (`--threads N`), it does nothing.

    A change of thread count changes the last bits of some products (OpenBLAS's kernels), so
    a run on a quiet machine is bit-identical to any other run on it; `--threads N` makes a
    run bit-identical whatever the load.
    """

    def __init__(self, interval=0.2, busy=0.6, idle=0.3):
        self.interval, self.busy, self.idle = interval, busy, idle
        self.cores = get_num_threads()          # the ceiling: what the loop starts with
        self.threads = self.cores
        self.reduced_steps = self.steps = 0
        self.enabled = _fixed[0] is None and self.cores > 1 and os.path.exists("/proc/stat")
        self._last = self._sample() if self.enabled else None

    @staticmethod
    def _sample():
        """(wall seconds, CPU seconds of every program, CPU seconds of this process)."""
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, time.process_time()

    def others(self):
        """Cores the other programs used since the last look (None before `interval`)."""
        now = self._sample()
        wall = now[0] - self._last[0]
        if wall < self.interval:
            return None
        used = (now[1] - self._last[1]) - (now[2] - self._last[2])
        self._last = now
        return max(0.0, used / wall)

    def step(self):
        """Call once per step: adjusts the thread count at most every `interval` seconds."""
        self.steps += 1
        self.reduced_steps += self.threads < self.cores
        if not self.enabled or time.perf_counter() - self._last[0] < self.interval:
            return
        others = self.others()
        if others is None:
            return
        if others >= self.busy:
            wanted = max(1, self.cores - math.ceil(others - 0.25))
        elif others <= self.idle:
            wanted = self.cores
        else:
            return                                  # in between: keep what we have
        if wanted != self.threads:
            self.threads = wanted
            set_num_threads(wanted)

    def close(self):
        """Every core again (the loop is over)."""
        if self.enabled and self.threads != self.cores:
            self.threads = self.cores
            set_num_threads(self.cores)
