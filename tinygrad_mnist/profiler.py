"""Where the time goes: a table per op (calls, forward ms, backward ms, share of the block), the
engine's own bookkeeping as one row, and everything else as another.

    with profile() as prof:
        loss = nn.cross_entropy(model(x), y); loss.backward(); opt.step()
    print(prof)

Profiling swaps timed versions of every op's forward and backward, of the engine's op recording
and of its backward walk in at the start of the block and puts the originals back at the end, so
outside a profile nothing is measured and nothing costs anything. It times the whole process
(all threads) while the block runs.
"""
import contextlib
import time

from . import ops, tensor


class Profile:
    """The measurements of one profile() block; print it for the table."""

    def __init__(self):
        self.ops = {}            # op name -> [calls, forward s, backward s, backward calls]
        self.recording = 0.0     # seconds inside the engine's op recording, forwards included
        self.walking = 0.0       # seconds inside backward walks, op backwards included
        self.wall = 0.0          # seconds the block took (all blocks profiled into it)
        self.steps = 0           # training steps, when the caller counts them
        self._inside = 0         # an op's forward or backward running: do not time nested ones

    def _row(self, name):
        row = self.ops.get(name)
        if row is None:
            row = self.ops[name] = [0, 0.0, 0.0, 0]
        return row

    @property
    def bookkeeping(self):
        """Engine time that is no op's forward or backward: tensors, graph, dependency counts.
        The profiler's own timing of each forward and backward is measured once and taken
        out, so what remains is what the engine costs without a profile."""
        forward = sum(r[1] for r in self.ops.values())
        backward = sum(r[2] for r in self.ops.values())
        timings = sum(r[0] + r[3] for r in self.ops.values()) * _timing_overhead()
        return max(self.recording + self.walking - forward - backward - timings, 0.0)

    def rows(self):
        """[(name, calls, forward s, backward s)] by total time, then the bookkeeping and the
        rest of the block (the optimizer, data, the user's own code) as two more rows."""
        table = sorted(((name, r[0], r[1], r[2]) for name, r in self.ops.items()),
                       key=lambda row: -(row[2] + row[3]))
        engine = sum(r[2] + r[3] for r in table) + self.bookkeeping
        return table + [("(engine bookkeeping)", None, self.bookkeeping, 0.0),
                        ("(outside the engine)", None, max(self.wall - engine, 0.0), 0.0)]

    def __str__(self):
        lines = [f"{'op':<24}{'calls':>8}{'forward ms':>12}{'backward ms':>13}{'share':>8}"]
        for name, calls, forward, backward in self.rows():
            share = (forward + backward) / self.wall if self.wall else 0.0
            lines.append(f"{name:<24}{'' if calls is None else calls:>8}{forward * 1e3:>12.3f}"
                         f"{backward * 1e3:>13.3f}{share:>8.1%}")
        lines.append(f"{'total':<24}{'':>8}{self.wall * 1e3:>12.3f}{'':>13}{'100.0%':>8}")
        if self.steps:
            lines.append(f"{self.steps} step{'s' if self.steps != 1 else ''}: "
                         f"{self.wall / self.steps * 1e3:.3f} ms a step, of "
                         f"which {self.bookkeeping / self.steps * 1e6:.1f} µs engine bookkeeping")
        return "\n".join(lines)


def _timed(prof, method, column):
    def timed(self, *args, **kwargs):
        if prof._inside:                       # a nested call: its time is its caller's
            return method(self, *args, **kwargs)
        prof._inside += 1
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            prof._inside -= 1
            row = prof._row(self.name)
            row[column] += elapsed
            row[0 if column == 1 else 3] += 1
    return timed


_OVERHEAD = []


def _timing_overhead():
    """Seconds that timing one forward or backward adds around it (measured once)."""
    if not _OVERHEAD:
        class Probe:
            name = "probe"

            def run(self):
                return None
        probe, timed = Probe(), _timed(Profile(), Probe.run, 1)
        costs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                timed(probe)
            middle = time.perf_counter()
            for _ in range(2000):
                Probe.run(probe)
            costs.append((middle - start - (time.perf_counter() - middle)) / 2000)
        _OVERHEAD.append(max(sorted(costs)[2], 0.0))          # the median of five
    return _OVERHEAD[0]


def _accumulating(prof, function, attribute):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            setattr(prof, attribute, getattr(prof, attribute) + time.perf_counter() - start)
    return timed


def _op_classes():
    found, stack = [], [ops.Op]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


_active = [0]       # profile blocks open now (a jitted step runs eagerly inside one)


def active():
    return _active[0] > 0


@contextlib.contextmanager
def profile(into=None):
    """Time every op's forward and backward, and the engine around them, inside the block;
    yields a Profile whose str() is the table. With `into`, several blocks add up in one."""
    prof = into if into is not None else Profile()
    originals = []

    def swap(owner, name, replacement):
        originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    for cls in _op_classes():
        for method, column in (("forward", 1), ("backward", 2)):
            if method in cls.__dict__:
                swap(cls, method, _timed(prof, cls.__dict__[method], column))
    swap(tensor, "record", _accumulating(prof, tensor.record, "recording"))
    swap(tensor, "_walk_backward", _accumulating(prof, tensor._walk_backward, "walking"))
    start = time.perf_counter()
    _active[0] += 1
    try:
        yield prof
    finally:
        _active[0] -= 1
        prof.wall += time.perf_counter() - start
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
