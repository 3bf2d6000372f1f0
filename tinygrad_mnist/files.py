"""Files written whole or not at all: every file the library and the trainer produce (models,
checkpoints, reports, pages, plots) goes through `atomic_write`."""
import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Write `path` through a temporary file beside it: on success the file is flushed to disk,
    given the permissions any new file gets (0666 less the umask: readable by others, like the
    plots beside it) and renamed to `path`; on any failure it is removed and `path` is left as
    it was. An OSError (a full disk) names `path`.

        with atomic_write("runs/x/metrics.json", "w") as f:
            json.dump(metrics, f)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename in (None, tmp):
            raise OSError(error.errno, error.strerror or str(error), path) from None
        raise
