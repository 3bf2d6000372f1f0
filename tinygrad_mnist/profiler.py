"""Where the time goes: a table per op (calls, forward ms, backward ms, share of the block), the
backward pass's own bookkeeping as one row, and everything else as another.

    with profile() as prof:
        loss = nn.cross_entropy(model(x), y); loss.backward(); opt.step()
    print(prof)

The profiler is an observer of the engine (engine.Observer), attached in the current thread for
the block: it is told when each op's forward and backward start and end, and when each backward
pass starts and ends. Other threads, and everything outside the block, are not measured.
"""
import contextlib
import time

from .engine import Observer, observe
from .tables import text_table


class Profile(Observer):
    """The measurements of one profile() block; print it for the table."""

    def __init__(self):
        self.ops = {}            # op name -> [calls, forward s, backward s, backward calls]
        self.walking = 0.0       # seconds inside backward passes, op backwards included
        self.wall = 0.0          # seconds the block took (all blocks profiled into it)
        self.steps = 0           # training steps, when the caller counts them
        self._started = []       # start times of the forwards and backwards running now
        self._walk_started = []

    def _row(self, name):
        row = self.ops.get(name)
        if row is None:
            row = self.ops[name] = [0, 0.0, 0.0, 0]
        return row

    # the engine's events ------------------------------------------------------------------
    # An op may run inside another's backward (gradients of gradients): only the outermost
    # one is timed, so that no time is counted twice.

    def before_op(self, op, inputs):
        self._started.append(time.perf_counter())

    def on_op(self, op, inputs, output):
        elapsed = time.perf_counter() - self._started.pop()
        if not self._started:
            row = self._row(op.name)
            row[0] += 1
            row[1] += elapsed

    def before_backward(self, op, grad_output):
        self._started.append(time.perf_counter())

    def on_backward(self, op, grad_output, grad_inputs):
        elapsed = time.perf_counter() - self._started.pop()
        if not self._started:
            row = self._row(op.name)
            row[3] += 1
            row[2] += elapsed

    def on_backward_start(self, outputs, grads, create_graph, capture):
        self._walk_started.append(time.perf_counter())

    def on_backward_end(self):
        elapsed = time.perf_counter() - self._walk_started.pop()
        if not self._walk_started and not self._started:
            self.walking += elapsed

    # the table ----------------------------------------------------------------------------

    @property
    def bookkeeping(self):
        """Time in backward passes that is no op's backward: the topological order, gradient
        accumulation, undoing broadcasts."""
        return max(self.walking - sum(r[2] for r in self.ops.values()), 0.0)

    def rows(self):
        """[(name, calls, forward s, backward s)] by total time, then the backward pass's
        bookkeeping and the rest of the block (the optimizer, data, the user's own code) as
        two more rows."""
        table = sorted(((name, r[0], r[1], r[2]) for name, r in self.ops.items()),
                       key=lambda row: -(row[2] + row[3]))
        engine = sum(r[2] + r[3] for r in table) + self.bookkeeping
        return table + [("(engine bookkeeping)", None, self.bookkeeping, 0.0),
                        ("(outside the ops)", None, max(self.wall - engine, 0.0), 0.0)]

    def __str__(self):
        rows = []
        for name, calls, forward, backward in self.rows():
            share = (forward + backward) / self.wall if self.wall else 0.0
            rows.append([name, "" if calls is None else calls, f"{forward * 1e3:.3f}",
                         f"{backward * 1e3:.3f}", f"{share:.1%}"])
        rows.append(["total", "", f"{self.wall * 1e3:.3f}", "", "100.0%"])
        lines = [text_table(["op", "calls", "forward ms", "backward ms", "share"], rows,
                            right=(1, 2, 3, 4))]
        if self.steps:
            lines.append(f"{self.steps} step{'s' if self.steps != 1 else ''}: "
                         f"{self.wall / self.steps * 1e3:.3f} ms a step, of "
                         f"which {self.bookkeeping / self.steps * 1e6:.1f} µs engine "
                         f"bookkeeping (in backward passes)")
        return "\n".join(lines)


@contextlib.contextmanager
def profile(into=None):
    """Time every op's forward and backward, and the backward passes around them, inside the
    block and in this thread; yields a Profile whose str() is the table. With `into`,
    several blocks add up in one."""
    prof = into if into is not None else Profile()
    start = time.perf_counter()
    try:
        with observe(prof):
            yield prof
    finally:
        prof.wall += time.perf_counter() - start
