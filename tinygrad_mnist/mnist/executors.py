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

EXECUTORS = ("serial", "processes", "ray")
RETRIES = 2


class ExecutorError(RuntimeError):
    """An executor cannot run: Ray missing, or a trial failed more often than allowed."""


def run_trials(fn, trials, executor="serial", workers=None, ray_address=None, retries=RETRIES,
               progress=True, description="trials", store=None):
    """fn(trial) for every trial; the results in order. With `store` (a directory), trials are
    dicts with a file-safe "key": each result is saved there as KEY.json the moment it
    arrives, and a trial whose result is already there is not run again (resume)."""
    check_executor(executor)
    trials = list(trials)
    workers = max(1, workers or os.cpu_count() or 1)
    results = [_stored(store, t) for t in trials] if store else [None] * len(trials)
    todo = [i for i, r in enumerate(results) if r is None]
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
    os.makedirs(store, exist_ok=True)
    path = os.path.join(store, f"{trial['key']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)           # whole or absent, even if killed while writing


def check_executor(executor):
    """Fail before anything is written: an unknown executor, or Ray not installed."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'tinygrad_mnist[ray]' "
                                "(or pip install -e \".[ray]\" in a checkout)") from None


def _progress_bar(total, description, enabled):
    from tqdm import tqdm
    return tqdm(total=total, desc=description, unit="trial", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def _serial(fn, trials, finished):
    from threadpoolctl import threadpool_limits
    for i, trial in enumerate(trials):
        with threadpool_limits(1):
            result = fn(trial)
        finished(i, result)


# ---------------------------------------------------------------- a local process pool

def _one_blas_thread():
    """Pool initializer: a worker's products stay on one core."""
    from threadpoolctl import threadpool_limits
    _one_blas_thread.limit = threadpool_limits(1)      # kept for the worker's lifetime


def _processes(fn, trials, workers, retries, finished):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    attempts = [0] * len(trials)
    todo = list(range(len(trials)))
    while todo:
        # spawn: a fresh interpreter per worker, never a fork of this threaded process
        pool = ProcessPoolExecutor(min(workers, len(todo)), multiprocessing.get_context("spawn"),
                                   initializer=_one_blas_thread)
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
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()                     # Ctrl-C: stop the workers now
            raise
        pool.shutdown(wait=True)
        todo.sort()


def _describe(trial):
    return trial.get("key", trial) if isinstance(trial, dict) else trial


# ---------------------------------------------------------------- Ray

def _ray(fn, trials, workers, address, retries, finished):
    import ray
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            # a local cluster; its workers import what this process imports
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                         p for p in sys.path if p and os.path.isdir(p))}})
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
