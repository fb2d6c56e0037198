"""The output folder of ``data prepare``: resumable, atomic, and recorded.

Every file is written under a temporary name and renamed when complete, so
a file that exists is whole: a rerun skips every sample whose files all
exist. While a preparation is under way the folder holds
``.prepare-partial.json`` (the settings it was started with); when every
sample is written, ``prepare.json`` (settings, sizes, class mappings,
units and invalid encodings) replaces it. The readers refuse a folder that
still holds the partial marker, so a stopped preparation never passes for
a dataset.
"""

import json
import os

import numpy as np

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import atomic_path, atomic_write_json, read_json

PREPARE_FILE = "prepare.json"
PARTIAL_FILE = ".prepare-partial.json"


def read_record(root):
    """The ``prepare.json`` of a prepared folder (``None`` for folders made otherwise).

    Raises :class:`UserError` when a preparation into ``root`` did not finish.
    """
    if os.path.exists(os.path.join(root, PARTIAL_FILE)):
        raise UserError(
            f"{root} is an unfinished `data prepare` output ({PARTIAL_FILE} is there): rerun "
            "the same prepare command to complete it (it resumes), then train."
        )
    return read_json(os.path.join(root, PREPARE_FILE), "rerun `data prepare` into a new folder")


def _plain(obj):
    return json.loads(json.dumps(obj))


def _differences(old, new):
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys
            if old.get(k) != new.get(k)]


class Output:
    """The output root of one preparation.

    Args:
        root: the folder to write (created if absent).
        settings: everything that decides the output (format, raw root,
            size, splits, options); a rerun with other settings is refused.
    """

    def __init__(self, root, settings):
        self.root = os.path.abspath(root)
        self.settings = _plain(settings)
        self.complete = False
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise UserError(f"Output {root} exists and is a file: give a folder to prepare into.")
        names = os.listdir(self.root) if os.path.isdir(self.root) else []
        for marker in (PREPARE_FILE, PARTIAL_FILE):
            if marker in names:
                self._check_same(os.path.join(self.root, marker))
                self.complete = marker == PREPARE_FILE
                break
        else:
            if names:
                shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
                raise UserError(
                    f"Output folder {root} already holds other files ({shown}) and no "
                    f"{PREPARE_FILE}: give a new or empty folder (nothing was written)."
                )
        if not self.complete:
            os.makedirs(self.root, exist_ok=True)
            self._remove_temporaries()
            atomic_write_json(os.path.join(self.root, PARTIAL_FILE), {"settings": self.settings})

    def _check_same(self, path):
        record = read_json(path, "prepare into a new folder")
        old = record.get("settings", {}) if isinstance(record, dict) else None
        if old != self.settings:
            raise UserError(
                f"{self.root} was prepared with other settings ("
                + "; ".join(_differences(old, self.settings))
                + "): prepare into a new folder, or rerun with the same settings."
            )

    def _remove_temporaries(self):
        # A killed preparation leaves `.NAME.*.tmp*` files (io.atomic_path).
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and ".tmp" in name:
                    os.remove(os.path.join(folder, name))

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def has(self, *paths):
        """Whether every one of ``paths`` (relative to the root) was written."""
        return all(os.path.exists(self.path(p)) for p in paths)

    def save_npy(self, relative, array):
        """Saves one ``.npy`` file atomically (``relative`` to the root)."""
        target = self.path(relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with atomic_path(target, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    def save_text(self, relative, text):
        from keras_sdmtcnn.io import atomic_write_text

        atomic_write_text(self.path(relative), text)

    def finish(self, record):
        """Writes ``prepare.json`` (the settings and ``record``) and drops the partial marker."""
        atomic_write_json(self.path(PREPARE_FILE), {"settings": self.settings, **_plain(record)})
        os.remove(self.path(PARTIAL_FILE))
        self.complete = True
