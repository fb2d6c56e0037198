"""The run directory: the only code that knows its layout.

``fit`` fills a run directory; ``evaluate``, ``export``, ``predict``, the
experiment runner and the distillation methods (which train from finished
runs) read it. Every file name, the status values and the resume state live
here::

    RUN_DIR/recipe.yaml            the resolved recipe (written first)
    RUN_DIR/run.json               status: running | failed | complete
    RUN_DIR/metrics.json           per-epoch logs (train and val)
    RUN_DIR/history.csv            the same as a table
    RUN_DIR/checkpoints/state.json the resume point: epoch, checkpoint file, best value
    RUN_DIR/checkpoints/last.keras after every epoch
    RUN_DIR/checkpoints/best.keras the best epoch by output.monitor
    RUN_DIR/tensorboard/           every loss term and metric; prediction panels
    RUN_DIR/model.keras            the full model, at the end
    RUN_DIR/student.keras          the Student sub-model, at the end
    RUN_DIR/curves.png             training curves, at the end
    RUN_DIR/evaluation.json, .md   written by evaluate
    RUN_DIR/test_at_best.json      with data.val_source: holdout, the test (val)
                                   split's metrics of checkpoints/best.keras
    RUN_DIR/stage1_teacher/        Baseline-3's first stage (the same layout)

Every file is written atomically (a temporary name, then a rename), so a
crash never leaves a half-written file under its final name. ``run.json``
says ``complete`` only once everything is written.
"""

import contextlib
import csv
import ctypes
import errno
import fcntl
import io
import os
import re
import shutil
import socket

import yaml

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import (
    atomic_link,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    left_behind,
    owner_tag,
    read_json,
    temp_dir_beside,
)

RUNNING, FAILED, COMPLETE = "running", "failed", "complete"
# What a reader reports for a run whose run.json says running while no
# process holds it any more (killed, crashed, its machine lost).
ENDED = "ended without finishing"


def atomic_save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file."""
    _cache_keras_skipsets()
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


# Keras 3 decides which attributes of each saved object to walk by comparing
# against a throwaway object of its base class (``get_attr_skipset``). It
# means to cache that set, but looks it up under ``saving_attr_skiplist_*``
# and stores it under ``saving_attr_skipset_*``, so every save builds one
# throwaway Layer per layer saved: 0.3 s of the 0.8 s a demo checkpoint took
# (480 layers), every epoch. Storing each set where it is looked up makes
# that a cache hit; the sets are the ones Keras computes, so what is saved
# does not change. Harmless once Keras reads the key it writes.
_SKIPSET_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def _cache_keras_skipsets():
    # Keras internals (no public API caches the skip sets; pinned to Keras
    # 3.15 in pyproject.toml): saving a model recomputes them per object,
    # seconds per checkpoint of the paper's model. Another layout saves as is.
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:  # another Keras layout: save as it is
        return
    for obj_type in _SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key, None) is None:
            global_state.set_global_attribute(key, get_attr_skipset(obj_type))


class RunDir:
    """One run directory: paths, status, records, checkpoints and the resume state."""

    RECIPE = "recipe.yaml"
    STATUS = "run.json"
    HISTORY = "metrics.json"
    HISTORY_CSV = "history.csv"
    CHECKPOINTS = "checkpoints"
    STATE = "state.json"
    LAST = "last.keras"
    BEST = "best.keras"
    TENSORBOARD = "tensorboard"
    MODEL = "model.keras"
    STUDENT = "student.keras"
    CURVES = "curves.png"
    EVALUATION = "evaluation.json"
    EVALUATION_TABLE = "evaluation.md"
    TEST_AT_BEST = "test_at_best.json"
    STAGE1 = "stage1_teacher"
    LOCK = ".lock"
    FINAL_FILES = (MODEL, STUDENT, CURVES)

    def __init__(self, path):
        self.path = os.path.normpath(str(path))
        self.replaces = None  # a staged run: the run directory it will replace
        self._restore_replaced()

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def recipe_path(self):
        return self.file(self.RECIPE)

    @property
    def model_path(self):
        return self.file(self.MODEL)

    @property
    def student_path(self):
        return self.file(self.STUDENT)

    @property
    def checkpoints(self):
        return self.file(self.CHECKPOINTS)

    @property
    def tensorboard(self):
        return self.file(self.TENSORBOARD)

    def stage1(self):
        """Baseline-3's first-stage run (the Teacher alone), inside this one."""
        return RunDir(self.file(self.STAGE1))

    # === Status ===

    def status(self):
        """The contents of ``run.json`` (``{}`` when there is none)."""
        return read_json(self.file(self.STATUS), "rerun fit on the run directory (it resumes "
                         "from its last checkpoint)") or {}

    def is_complete(self):
        return self.status().get("status") == COMPLETE

    def write_status(self, status, **fields):
        atomic_write_json(self.file(self.STATUS), {"status": status, **fields})

    def state_of_run(self):
        """``complete``, ``failed``, ``running``, :data:`ENDED`, or ``None`` (no run)."""
        status = self.status().get("status")
        if status == RUNNING and not self.held():
            return ENDED
        return status

    def mark_ended(self, reason):
        """Records that the run's process ended without finishing (run.json said running)."""
        status = self.status()
        if status.get("status") == RUNNING:
            self.write_status(FAILED, **{k: v for k, v in status.items() if k != "status"},
                              error=reason)

    # === Recipe ===

    def save_recipe(self, recipe):
        from keras_sdmtcnn.config import save_recipe

        save_recipe(recipe, self.recipe_path)

    def recipe_dict(self):
        """The resolved recipe the run was trained with, as a dict (``None`` if absent)."""
        if not os.path.exists(self.recipe_path):
            return None
        try:
            with open(self.recipe_path, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"{self.recipe_path} is not valid YAML ({type(e).__name__}); it is "
                            "cut short or garbled: restore it, or rerun fit --overwrite.") from None
        if not isinstance(values, dict):
            raise UserError(f"{self.recipe_path} is not a recipe (a mapping of sections): "
                            "restore it, or rerun fit --overwrite.")
        return values

    # === Records ===

    def read_history(self):
        """Every recorded epoch's logs (a list of dicts)."""
        history = read_json(self.file(self.HISTORY), "rerun fit --overwrite to train the run "
                            "again")
        if not isinstance(history, list):
            raise UserError(f"{self.file(self.HISTORY)} is not a list of epochs: rerun fit "
                            "--overwrite to train the run again.")
        return history

    def write_history(self, history):
        atomic_write_json(self.file(self.HISTORY), history)
        atomic_write_text(self.file(self.HISTORY_CSV), history_csv(history))

    def write_evaluation(self, results, table, title):
        atomic_write_json(self.file(self.EVALUATION), results)
        atomic_write_text(self.file(self.EVALUATION_TABLE), f"{title}\n\n{table}")

    def write_test_at_best(self, results, epoch, monitor):
        """The test split's metrics of the epoch that ``monitor`` chose on the held-out split."""
        atomic_write_json(self.file(self.TEST_AT_BEST),
                          {"epoch": epoch, "monitor": monitor, "metrics": results})

    def read_test_at_best(self):
        """``{"epoch", "monitor", "metrics"}`` from :meth:`write_test_at_best`, or ``None``."""
        return read_json(self.file(self.TEST_AT_BEST), "remove it; the plan writes it again")

    @property
    def best_checkpoint(self):
        return os.path.join(self.checkpoints, self.BEST)

    def best_epoch(self, monitor):
        """The epoch whose ``monitor`` value is the best one recorded (``None`` if unknown)."""
        state = self.read_state()
        if state is None:
            return None
        for record in self.read_history():
            if record.get(monitor, record.get("loss")) == state["best"]:
                return record["epoch"]
        return None

    # === Checkpoints and resuming ===

    def save_checkpoint(self, model, epoch, best, monitor, improved):
        """Saves the model after ``epoch`` and makes it the resume point.

        In this order, each atomically: ``checkpoints/epoch-NNNN.keras``;
        ``state.json`` naming it (the one source of truth for resuming);
        ``last.keras`` and, when ``improved``, ``best.keras`` (hard links, or
        copies); then older epoch files are removed. A crash at any point
        leaves a consistent state: at worst the epoch is done again.
        """
        os.makedirs(self.checkpoints, exist_ok=True)
        name = f"epoch-{epoch:04d}.keras"
        path = os.path.join(self.checkpoints, name)
        atomic_save_model(model, path)
        atomic_write_json(os.path.join(self.checkpoints, self.STATE),
                          {"epoch": epoch, "checkpoint": name, "best": best,
                           "monitor": monitor})
        atomic_link(path, os.path.join(self.checkpoints, self.LAST))
        if improved:
            atomic_link(path, os.path.join(self.checkpoints, self.BEST))
        for old in os.listdir(self.checkpoints):
            if old.startswith("epoch-") and old != name:
                os.remove(os.path.join(self.checkpoints, old))

    def read_state(self):
        """The resume point (``epoch``, ``best``, ``path`` of the checkpoint), or ``None``."""
        path = os.path.join(self.checkpoints, self.STATE)
        state = read_json(path, "remove checkpoints/ to start the run afresh, or fit "
                          "--overwrite")
        if state is None:
            return None
        if not isinstance(state, dict) or not {"epoch", "checkpoint", "best"} <= set(state):
            raise UserError(f"{path} is not a resume point written by fit (it lacks epoch, "
                            "checkpoint or best): remove checkpoints/ to start the run afresh, "
                            "or fit --overwrite.")
        state["path"] = os.path.join(self.checkpoints, state["checkpoint"])
        return state if os.path.exists(state["path"]) else None

    def has_run(self):
        """Whether anything of a run is here (a recipe, a status or checkpoints)."""
        return any(os.path.exists(self.file(n)) for n in (self.RECIPE, self.STATUS,
                                                          self.CHECKPOINTS))

    # === Replacing a run (fit --overwrite) ===

    def staging(self):
        """A new, hidden run directory beside this one, where an overwriting run trains."""
        parent = os.path.dirname(os.path.abspath(self.path))
        staged = RunDir(temp_dir_beside(parent, f".{os.path.basename(self.path)}.overwrite."))
        staged.replaces = self.path
        return staged

    def replace_with(self, staging):
        """Puts the finished ``staging`` run in this one's place; the old run is removed.

        An atomic exchange of the two folders where the file system has one
        (Linux ``renameat2``), so a kill at any moment leaves the old run or
        the new one under this name. Elsewhere two renames, and a kill
        between them is mended by the next :meth:`lock` (the old run comes
        back).
        """
        if not _exchange(staging.path, self.path):
            parked = os.path.join(os.path.dirname(os.path.abspath(self.path)),
                                  f".{os.path.basename(self.path)}.replaced.{owner_tag()}.tmp")
            os.replace(self.path, parked)
            os.replace(staging.path, self.path)
            staging = RunDir(parked)
        shutil.rmtree(staging.path, ignore_errors=True)

    def remove(self):
        """Removes this run directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _restore_replaced(self):
        """A run parked by an interrupted :meth:`replace_with` goes back in place.

        Run whenever a ``RunDir`` is made, so every command that opens the
        run directory finds the old run there.
        """
        if os.path.exists(self.path):
            return
        parent = os.path.dirname(os.path.abspath(self.path)) or "."
        prefix = f".{os.path.basename(self.path)}.replaced."
        for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
            if name.startswith(prefix) and left_behind(name):
                os.replace(os.path.join(parent, name), self.path)
                return

    def remove_final_files(self):
        """Removes the files that only a finished run has, before training again."""
        for name in self.FINAL_FILES:
            if os.path.exists(self.file(name)):
                os.remove(self.file(name))

    # === One process at a time ===

    @contextlib.contextmanager
    def lock(self, note=""):
        """Holds the run directory for this process; another live process's hold is an error.

        The hold is an advisory lock (``flock``) on ``RUN_DIR/.lock``, which
        the operating system releases when the process ends, however it
        ends: a lock left by a killed process never blocks a resume. The
        file names the holder (``process PID on HOST``, and ``note``).
        """
        os.makedirs(self.path, exist_ok=True)
        handle = open(self.file(self.LOCK), "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(
                    f"{self.path} is being written by {holder}: wait for it to finish, stop "
                    "it, or choose another --run-dir.") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()} on {socket.gethostname()}{note}\n")
            handle.flush()
            yield self
        finally:
            handle.close()

    def held(self):
        """Whether the process named in ``.lock`` still runs (``True`` when it cannot be told).

        Read from the lock file, never by taking the lock (that could make
        a starting ``fit`` find it taken). A holder on another host is
        taken to be alive.
        """
        try:
            with open(self.file(self.LOCK)) as f:
                text = f.read()
        except OSError:
            return False
        found = re.match(r"process (\d+)(?: on (\S+))?", text)  # 0.2 wrote no host
        if found is None:
            return bool(text.strip())
        if found.group(2) not in (None, socket.gethostname()):
            return True
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def remove_temporaries(self):
        """Removes the temporary files and folders that a process now gone left here.

        Those of a live process (another command writing ``evaluation.json``
        into this run, say) stay (``io.left_behind``). So do the hidden
        folders of an interrupted ``fit --overwrite`` beside the run.
        """
        parent = os.path.dirname(os.path.abspath(self.path))
        overwrites = f".{os.path.basename(self.path)}.overwrite."
        for folder, only in ((self.path, None), (self.checkpoints, None), (parent, overwrites)):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                temporary = name.startswith(".") and ".tmp" in name and name != self.LOCK
                if only is not None:
                    temporary = name.startswith(only)
                if temporary and left_behind(name):
                    path = os.path.join(folder, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.remove(path)

    # === Finding what to load ===

    @classmethod
    def resolve(cls, path, recipe_path=None, checkpoint=MODEL):
        """``(model_file, recipe_file)`` from a run directory or a ``.keras`` file.

        A ``.keras`` file's recipe is the ``recipe.yaml`` of its run: beside
        it, or one folder up (for checkpoints).
        """
        if os.path.isdir(path):
            model_file = os.path.join(path, checkpoint)
            if not os.path.exists(model_file):
                raise UserError(
                    f"{model_file} does not exist: is {path} a finished run directory?"
                )
            recipe_path = recipe_path or os.path.join(path, cls.RECIPE)
        elif path.endswith(".keras") and os.path.isfile(path):
            model_file = path
            if recipe_path is None:
                guess = os.path.join(os.path.dirname(path), cls.RECIPE)
                if not os.path.exists(guess):
                    guess = os.path.join(os.path.dirname(os.path.dirname(path)), cls.RECIPE)
                recipe_path = guess if os.path.exists(guess) else None
        else:
            raise UserError(f"{path} is neither a run directory nor a .keras model file.")
        if recipe_path is None or not os.path.exists(recipe_path):
            raise UserError(f"No recipe found for {path}: pass --recipe RECIPE.yaml.")
        return model_file, recipe_path

    def finished(self, key):
        """``(recipe dict, model.keras path)`` of this finished run, or an error naming ``key``."""
        if not os.path.isdir(self.path):
            raise UserError(
                f"{key}: the run {self.path} does not exist. Train it first "
                f"(python -m keras_sdmtcnn.fit RECIPE --run-dir {self.path}) or fix the path.")
        state = self.state_of_run()
        if state != COMPLETE or not os.path.exists(self.model_path):
            raise UserError(
                f"{key}: {self.path} is not a finished run (run.json says "
                f"{state or 'nothing'!r}); finish training it first.")
        return self.recipe_dict(), self.model_path


def _exchange(a, b):
    """Swaps two paths atomically (Linux ``renameat2``); ``False`` where it cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def history_csv(history):
    """The per-epoch records as CSV text (columns in order of first appearance)."""
    columns = []
    for record in history:
        columns += [k for k in record if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()
