"""Running many independent trials (training runs): one after another, on a local process
pool, or as Ray tasks on a cluster.

    results = run_trials(run_sweep_trial, trials, executor="processes", workers=2)

`fn(trial)` must be a module-level function (workers import it by name) that seeds
everything from the trial itself, never from the worker, so a trial gives the same numbers
under every executor. Results come back in the order of `trials`.

Every trial runs on one BLAS thread, whatever the executor: OpenBLAS's results can depend on
its thread count, and a trial must give the same numbers everywhere.

- serial: one trial after another, in this process.
- processes: a local pool of `workers` processes, one trial (and one core) each. A worker that dies (killed, out of memory) breaks the pool: the trials
  it had not finished are retried on a new pool, up to `retries` times each.
- ray: each trial a Ray task needing one CPU, retried by Ray when its worker dies; connects to
  the cluster at `ray_address`, or starts a local one with `workers` CPUs.

A trial that trains with checkpoints (the sweep's) resumes from its own checkpoint when it is
retried. Ctrl-C cancels what has not finished and raises KeyboardInterrupt.
"""
import json
import os
import sys

from ..files import atomic_write

EXECUTORS = ("serial", "processes", "ray")
RETRIES = 2


class ExecutorError(RuntimeError):
    """An executor cannot run: Ray missing, or a trial failed more often than allowed."""


def run_trials(fn, trials, executor="serial", workers=None, ray_address=None, retries=RETRIES,
               progress=True, description="trials", store=None, log=None):
    """fn(trial) for every trial; the results in order. With `store` (a directory), trials are
    dicts with a file-safe "key": each result is saved there as KEY.json the moment it
    arrives, and a trial whose result is already there is not run again (resume)."""
    check_executor(executor, ray_address)
    trials = list(trials)
    workers = max(1, workers or os.cpu_count() or 1)
    results = [_stored(store, t) for t in trials] if store else [None] * len(trials)
    todo = [i for i, r in enumerate(results) if r is None]
    if log is not None and len(todo) < len(trials):
        done = len(trials) - len(todo)
        log(f"{done} of {len(trials)} {description} trials already finished in {store}: "
            f"skipped")
    if executor == "ray" and todo:
        _ray_connect(workers, ray_address)      # before the bar: nothing of Ray's inside it
    bar = _progress_bar(len(trials), description, progress)
    bar.update(len(trials) - len(todo))

    def finished(k, result):
        i = todo[k]
        results[i] = result
        if store:
            _store(store, trials[i], result)
        bar.update(1)

    pending = [trials[i] for i in todo]
    try:
        if executor == "serial":
            _serial(fn, pending, finished)
        elif executor == "processes":
            _processes(fn, pending, workers, retries, finished)
        else:
            _ray(fn, pending, workers, ray_address, retries, finished)
    finally:
        bar.close()
    return results


def _stored(store, trial):
    path = os.path.join(store, f"{trial['key']}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def _store(store, trial, result):
    with atomic_write(os.path.join(store, f"{trial['key']}.json"), "w") as f:
        json.dump(result, f)                  # whole or absent, even if killed while writing


def check_executor(executor, ray_address=None):
    """Fail before anything is written: an unknown executor, Ray not installed, or no Ray
    cluster at ray_address."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'tinygrad_mnist[ray]' "
                                "(or pip install -e \".[ray]\" in a checkout)") from None
        if ray_address:
            _reachable(ray_address)


def _progress_bar(total, description, enabled):
    from .console import progress_bar
    return progress_bar(total, description, "trial", enabled, leave=True)


def _serial(fn, trials, finished):
    from threadpoolctl import threadpool_limits
    for i, trial in enumerate(trials):
        with threadpool_limits(1):
            result = fn(trial)
        finished(i, result)


# ---------------------------------------------------------------- a local process pool

def _worker_setup():
    """Pool initializer: a worker's products stay on one core, and Ctrl-C (sent to the whole
    process group) is the parent's to handle: it stops the workers itself."""
    import signal
    import threading
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_setup.limit = threadpool_limits(1)         # kept for the worker's lifetime
    # tqdm's default lock is a multiprocessing semaphore, which a terminated worker would
    # leave behind (a resource_tracker warning at exit); a worker draws no bars of its own
    tqdm.set_lock(threading.RLock())


def _stop(pool):
    """Cancel what has not started and end the workers now (Ctrl-C or an error). The worker
    processes are listed first: shutdown() forgets them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True)             # its queues closed too, so nothing is left to clean


def _processes(fn, trials, workers, retries, finished):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    attempts = [0] * len(trials)
    todo = list(range(len(trials)))
    while todo:
        # spawn: a fresh interpreter per worker, never a fork of this threaded process
        pool = ProcessPoolExecutor(min(workers, len(todo)), multiprocessing.get_context("spawn"),
                                   initializer=_worker_setup)
        try:
            running = {pool.submit(fn, trials[i]): i for i in todo}
            for i in todo:
                attempts[i] += 1
            todo = []
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        todo.append(i)                  # its worker, or another, died
                        continue
                    finished(i, result)
            for i in todo:
                if attempts[i] > retries:
                    raise ExecutorError(f"trial {i} ({_describe(trials[i])}) lost its worker "
                                        f"{attempts[i]} times; giving up")
        except BaseException:
            _stop(pool)
            raise
        pool.shutdown(wait=True)
        todo.sort()


def _describe(trial):
    return trial.get("key", trial) if isinstance(trial, dict) else trial


# ---------------------------------------------------------------- Ray

REACH_SECONDS = 5


def _reachable(address):
    """Raise ExecutorError naming `address` unless something listens there: ray.init would
    otherwise retry for minutes."""
    import socket
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise ExecutorError(f"--ray-address {address}: expected HOST:PORT (HOST:6379, or "
                            f"ray://HOST:10001)") from None
    try:
        socket.create_connection((host or "127.0.0.1", port), timeout=REACH_SECONDS).close()
    except OSError as error:
        raise ExecutorError(f"cannot reach a Ray cluster at {address} "
                            f"({error.strerror or error}); check --ray-address, or leave it "
                            f"out to start a local cluster") from None


def _ray_connect(workers, address):
    """Join the cluster at `address`, or start a local one whose workers import what this
    process imports; Ray's own start-up messages below errors are not shown."""
    import logging
    import ray
    if ray.is_initialized():
        return
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        _reachable(address)
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=workers, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in sys.path if p and os.path.isdir(p))}}, **quiet)


def _ray(fn, trials, workers, address, retries, finished):
    import ray
    _ray_connect(workers, address)
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(_ray_trial)
    refs = [task.remote(fn, trial) for trial in trials]
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    trial = trials[index[ref]]
                    raise ExecutorError(f"trial {index[ref]} ({_describe(trial)}) failed on "
                                        f"Ray: {error}") from None
                finished(index[ref], result)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _ray_trial(fn, trial):
    """A Ray task: one trial on one BLAS thread."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        return fn(trial)
