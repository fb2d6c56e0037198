"""Atomic file writes: write to a temporary name beside the target, then rename.

A crash mid-write leaves the previous good file (or none), never a
half-written one.
"""

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile


def owner_tag():
    """``p1234-ab12cd``: this process (pid and a short hash of the host name).

    Every temporary name carries it, so that a cleanup removes only what a
    process that is gone left behind, never the temporary file another
    live process is writing (another command on the same run directory).
    """
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    return f"p{os.getpid()}-{host}"


_OWNER = re.compile(r"[.-]p(\d+)-([0-9a-f]{6})\.")


def left_behind(name):
    """Whether the temporary ``name`` was left by a process that is gone.

    A name without an owner tag (written by an older version) counts as
    left behind; one written on another host is never taken as gone.
    """
    found = _OWNER.search(name)
    if found is None:
        return True
    pid, host = int(found.group(1)), found.group(2)
    if host != owner_tag().split("-")[1]:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_beside(path, suffix=""):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.{owner_tag()}.", suffix=f".tmp{suffix}", dir=folder
    )
    os.close(fd)
    # mkstemp makes the file private (0600); the final file gets the mode
    # any new file of the user gets (0644 under umask 022).
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside ``path``; renames it to ``path`` on success."""
    tmp = _tmp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_savefig(fig, path, **kwargs):
    with atomic_path(path, suffix=os.path.splitext(path)[1]) as tmp:
        fig.savefig(tmp, **kwargs)


def atomic_link(source, target):
    """Makes ``target`` the same file as ``source`` (hard link, else copy), atomically."""
    import shutil

    tmp = _tmp_beside(target, suffix=os.path.splitext(target)[1])
    os.remove(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def temp_dir_beside(folder, prefix):
    """A new temporary folder in ``folder``, with the mode a new folder of the user gets.

    ``tempfile.mkdtemp`` makes it private (0700); a folder built under a
    temporary name and then renamed into place must end up as any other
    (0755 under umask 022).
    """
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}.", dir=folder)
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def unreadable(path, what, advice, error=None):
    """The one error for a file the project wrote that does not parse back.

    ``what`` names the file's kind (``"JSON"``, ``"a TFLite model"``),
    ``advice`` what to do (re-export, resume, rerun fit). Every reader of a
    file the project wrote raises this instead of its library's error.
    """
    from keras_sdmtcnn.errors import UserError

    detail = ""
    if error is not None:
        first = str(error).strip().splitlines()
        detail = f" ({(first[0] if first else type(error).__name__)[:160]})"
    return UserError(f"{path} is not valid {what}{detail}; it is cut short or garbled: "
                     f"{advice}.")


def read_json(path, advice):
    """The JSON in ``path`` (``None`` when there is no such file); garbled is :func:`unreadable`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise unreadable(path, "JSON", advice, e) from None
