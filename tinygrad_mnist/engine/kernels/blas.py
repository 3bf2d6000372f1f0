"""Matrix products with the BLAS thread count chosen per product.

OpenBLAS splits every product across all its threads. When the inner dimension is small (the
weight gradient of a batch of 32 sums over only 32 rows; anything through a 10-wide layer sums
over 10), splitting costs more than it saves: on 2 cores such products ran up to 3x faster on
one thread (benchmarks/RESULTS.md). Larger products keep every thread. Without OpenBLAS found
by threadpoolctl, this is plain `a @ b`.

OpenBLAS's thread count is one setting for the whole process, while Python threads may run
products at the same time (NumPy releases the GIL). So the switch is counted: the first small
product to start records the count and sets one thread, the last to finish puts the recorded
count back. The process is never left on fewer threads than it had.
"""
import threading

import numpy as np

TINY_MACS = 262_144       # below this OpenBLAS runs on one thread by itself: no switch needed
SMALL_INNER = 16          # inner dimension at or below which one thread always wins
MEDIUM_INNER = 32         # ... and up to which it wins for products of few multiply-adds
MEDIUM_MACS = 4_000_000

AXPY_SIZE = 262_144       # from this many elements BLAS's axpy beats NumPy's two passes

_threads = None           # (get, set) C functions of OpenBLAS's thread count, found on first use
_axpy = None              # {dtype: OpenBLAS's cblas axpy}, found on first use
_switch_lock = threading.Lock()
_single = 0               # small products running now, on one thread
_restore = 1              # the thread count to put back when the last of them finishes


def _openblas_libraries():
    """The OpenBLAS libraries loaded in this process (threadpoolctl finds them), opened with
    ctypes; none without threadpoolctl or where it cannot inspect the process."""
    try:
        import ctypes
        from threadpoolctl import ThreadpoolController
        return [ctypes.CDLL(lib.filepath) for lib in ThreadpoolController().lib_controllers
                if lib.internal_api == "openblas"]
    except Exception:
        return []


def _openblas_thread_functions():
    """OpenBLAS's own get/set functions, called directly through ctypes: threadpoolctl finds
    the library, and a direct call costs well under a microsecond."""
    global _threads
    if _threads is None:
        _threads = False
        try:
            import ctypes
            for dll in _openblas_libraries():
                for prefix in ("", "scipy_"):
                    for suffix in ("", "64_"):
                        get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
                        put = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
                        if get and put:
                            get.restype, put.restype = ctypes.c_int, None
                            put.argtypes = [ctypes.c_int]
                            _threads = (get, put)
                            return _threads
        except Exception:            # no threadpoolctl, or it cannot inspect this process
            pass
    return _threads


def one_thread_is_faster(m, k, n):
    return k <= SMALL_INNER or (k <= MEDIUM_INNER and m * k * n <= MEDIUM_MACS)


def _needs_switch(m, k, n):
    """One thread is faster, and OpenBLAS would otherwise split the product: it keeps products
    under GEMM_MULTITHREAD_THRESHOLD * 65536 multiply-adds (262,144 by default) on one thread."""
    return m * k * n >= TINY_MACS and one_thread_is_faster(m, k, n)


def matmul(a, b, out=None):
    """a @ b, on one BLAS thread when the product's shape says that is faster.

    Into `out`, an array allocated once and written again, every thread is used: what one
    thread saves on a fresh result is the cost of OpenBLAS's threads first touching newly
    mapped pages, which a reused array does not have."""
    if out is not None:
        return np.matmul(a, b, out=out)
    if a.size * b.shape[-1] < TINY_MACS:     # at least m*k*n: too small for threads anyway
        return a @ b
    k = a.shape[-1]
    m = a.shape[-2] if a.ndim > 1 else 1
    n = b.shape[-1] if b.ndim > 1 else 1
    if not _needs_switch(m, k, n):
        return a @ b
    functions = _openblas_thread_functions()
    if not functions:
        return a @ b
    _enter_single(*functions)
    try:
        return a @ b
    finally:
        _leave_single(functions[1])


def _enter_single(get, put):
    global _single, _restore
    with _switch_lock:
        if _single == 0:
            _restore = get()
            if _restore != 1:
                put(1)
        _single += 1


def _leave_single(put):
    global _single
    with _switch_lock:
        _single -= 1
        if _single == 0 and _restore != 1:
            put(_restore)


# ---------------------------------------------------------------- the process's thread count

_original = None           # the count the BLAS library started with


def _set(n):
    """Set the BLAS library's thread count (OpenBLAS directly, others through threadpoolctl),
    remembering the count it started with."""
    global _original
    if _original is None:
        _original = get_num_threads()
    functions = _openblas_thread_functions()
    if functions:
        functions[1](int(n))
        return
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=int(n), user_api="blas")     # stays until set again
    except Exception:                                          # no controllable BLAS
        pass


def get_num_threads():
    """The BLAS thread count products use now (1 where it cannot be read)."""
    functions = _openblas_thread_functions()
    if functions:
        return int(functions[0]())
    try:
        from threadpoolctl import threadpool_info
        return max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
                   or [1])
    except Exception:
        return 1


def set_num_threads(n):
    """Run matrix products on n threads (as torch.set_num_threads); None gives the count back
    to the BLAS library's own default (usually one per core)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: expected a positive int or None, got {n!r}")
    if n is not None:
        _set(n)
    elif _original is not None:
        _set(_original)


def default_threads():
    """The BLAS library's own thread count, from before anything here changed it."""
    return _original if _original is not None else get_num_threads()


def column_sums(rows):
    """rows (M, C) summed over M, as one product with ones: with a short C (channels) 10x
    faster than NumPy's reduction over the long leading axis."""
    return matmul(np.ones(rows.shape[0], rows.dtype), rows)


def _axpy_functions():
    """OpenBLAS's cblas axpy and axpby (y = a x + b y) through ctypes, as {(name, dtype):
    function}, or {} where they are not found."""
    global _axpy
    if _axpy is None:
        _axpy = {}
        try:
            import ctypes
            for dll in _openblas_libraries():
                for prefix in ("", "scipy_"):
                    for suffix, size in (("", ctypes.c_int), ("64_", ctypes.c_int64)):
                        found = {}
                        for letter, dtype, scalar in (("s", np.float32, ctypes.c_float),
                                                      ("d", np.float64, ctypes.c_double)):
                            for name, scalars in (("axpy", [scalar]),
                                                  ("axpby", [scalar, scalar])):
                                f = getattr(dll, f"{prefix}cblas_{letter}{name}{suffix}", None)
                                if f is None:
                                    continue
                                f.restype = None
                                f.argtypes = [size, scalars[0], ctypes.c_void_p, size] + (
                                    scalars[1:] + [ctypes.c_void_p, size])
                                found[name, np.dtype(dtype)] = f
                        if len(found) == 4:
                            _axpy = found
                            return _axpy
        except Exception:            # no threadpoolctl, or it cannot inspect this process
            pass
    return _axpy


def _blas_level1(name, x, y):
    """The BLAS function `name` for y += ... x, where both arrays suit it, else None."""
    if (x.dtype == y.dtype and x.shape == y.shape
            and x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable):
        return _axpy_functions().get((name, y.dtype))
    return None


def axpy(alpha, x, y, work):
    """y += alpha * x, in place: BLAS's axpy (one pass, on BLAS's threads: 2.4x faster than
    NumPy's two for a 784x512 weight) for large contiguous float arrays of one dtype; else
    NumPy's two steps through `work` (an array of y's shape). The two may differ in the last
    bit (BLAS may fuse the multiply-add); each gives the same from run to run."""
    if y.size >= AXPY_SIZE:                  # small ones skip the lookup: a step of a tiny
        f = _blas_level1("axpy", x, y)       # net makes several of these calls
        if f is not None:
            f(y.size, float(alpha), x.ctypes.data, 1, y.ctypes.data, 1)
            return y
    np.multiply(x, alpha, out=work)
    y += work
    return y


def axpby(alpha, x, beta, y):
    """y = alpha * x + beta * y, in place: OpenBLAS's axpby (one pass) where axpy applies;
    else NumPy's y *= beta, then y += x (alpha must then be 1)."""
    if y.size >= AXPY_SIZE:
        f = _blas_level1("axpby", x, y)
        if f is not None:
            f(y.size, float(alpha), x.ctypes.data, 1, float(beta), y.ctypes.data, 1)
            return y
    if alpha != 1:
        raise ValueError(f"axpby: NumPy's form takes alpha = 1, got {alpha}")
    y *= beta
    y += x
    return y
