"""Atomic file writes: write to a temporary name beside the target, then rename.

A crash mid-write leaves the previous good file (or none), never a
half-written one.
"""

import contextlib
import json
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_beside(path, suffix=""):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder
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
    tmp = tempfile.mkdtemp(prefix=prefix, dir=folder)
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp
