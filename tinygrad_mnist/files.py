"""Files written whole or not at all: every file the library and the trainer produce (models,
checkpoints, reports, pages, plots) goes through `atomic_write`; a folder that a command
writes is held by one writer at a time (`folder_lock`)."""
import contextlib
import json
import os
import socket
import tempfile
import time


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


def remove_entries(directory, names):
    """Delete the files and folders `names` inside directory (a run replaced with --force)."""
    import shutil
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def prepare_run_folder(out, outputs, resume, force):
    """A run folder that is never silently overwritten: a new run needs none of `outputs`
    there (or `force`, which removes them first, so that a killed new run never leaves an old
    model beside its own checkpoint); `resume` needs the checkpoint.npz it continues.
    Temporary files of a run killed mid-write are removed."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith(".tmp-") and name.endswith(".npz"):
            os.unlink(os.path.join(out, name))
    existing = [name for name in outputs if os.path.exists(os.path.join(out, name))]
    if resume:
        if "checkpoint.npz" not in existing:
            raise ValueError(f"--resume: {out} holds no checkpoint.npz to continue; start a "
                             f"new run without --resume")
    elif existing and not force:
        raise ValueError(f"--out {out} already holds a run ({', '.join(existing)}); pass "
                         f"--resume to continue it, --force to replace it, or another --out")
    elif existing:
        remove_entries(out, existing)


class FolderBusy(ValueError):
    """Another live process is writing the folder (its lock names it)."""


_HELD = {}                   # lock path -> how many times this process holds it


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                  # another user's process, or no way to ask: assume alive
    return True


@contextlib.contextmanager
def folder_lock(directory, command):
    """Hold `directory` for one writer: a `.lock` file made with O_EXCL names this process
    (pid, host, command, start). A second writer gets FolderBusy naming the first; a lock left
    by a process that no longer runs on this host is recognized as stale and taken over. The
    same process may take it again (a sweep's trial writing under the sweep's folder). A
    folder it made and that is still empty at the end (a command that refused) is removed."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory} is a file, not a folder: choose another folder")
    made, parent = [], os.path.abspath(directory)
    while not os.path.isdir(parent):              # the folders this call makes, innermost first
        made.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder == "gone":                               # released meanwhile
                continue
            if holder is not None and (holder.get("host") != me["host"]
                                       or _alive(holder.get("pid", -1))):
                where = "" if holder.get("host") == me["host"] else f" on {holder.get('host')}"
                raise FolderBusy(
                    f"{directory} is being written by another run ({holder.get('command')}, "
                    f"pid {holder.get('pid')}{where}, since {holder.get('started')}); wait for "
                    f"it to finish or choose another folder (if that process is gone, delete "
                    f"{path})") from None
            with contextlib.suppress(FileNotFoundError):      # stale: its process is gone
                os.unlink(path)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise FolderBusy(f"{directory}: could not take {path}; another run keeps taking it")
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        with contextlib.suppress(OSError):
            if _read_lock(path) == me:
                os.unlink(path)
            for folder in made:                   # what a refused command made, if empty
                if os.listdir(folder):
                    break
                os.rmdir(folder)


def _read_lock(path):
    """The lock's holder, or None for a lock being written or damaged (taken as stale only
    after a moment, so that a writer between its create and its write is not robbed)."""
    for _ in range(20):
        try:
            with open(path) as f:
                holder = json.load(f)
            if isinstance(holder, dict):
                return holder
        except FileNotFoundError:
            return "gone"
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None
