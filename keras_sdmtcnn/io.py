"""Atomic file writes: write to a temporary name beside the target, then rename.

A crash mid-write leaves the previous good file (or none), never a
half-written one.
"""

import json
import os
import tempfile


def _tmp_beside(path, suffix=""):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder
    )
    os.close(fd)
    return tmp


def atomic_write_text(path, text):
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file."""
    tmp = _tmp_beside(path, suffix=".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_savefig(fig, path, **kwargs):
    tmp = _tmp_beside(path, suffix=os.path.splitext(path)[1])
    try:
        fig.savefig(tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
