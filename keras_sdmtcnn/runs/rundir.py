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
import fcntl
import io
import json
import os
import shutil

import yaml

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import atomic_link, atomic_path, atomic_write_json, atomic_write_text

RUNNING, FAILED, COMPLETE = "running", "failed", "complete"


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
        self.path = str(path)

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
        path = self.file(self.STATUS)
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            return json.load(f)

    def is_complete(self):
        return self.status().get("status") == COMPLETE

    def write_status(self, status, **fields):
        atomic_write_json(self.file(self.STATUS), {"status": status, **fields})

    # === Recipe ===

    def save_recipe(self, recipe):
        from keras_sdmtcnn.config import save_recipe

        save_recipe(recipe, self.recipe_path)

    def recipe_dict(self):
        """The resolved recipe the run was trained with, as a dict (``None`` if absent)."""
        if not os.path.exists(self.recipe_path):
            return None
        with open(self.recipe_path) as f:
            return yaml.safe_load(f)

    # === Records ===

    def read_history(self):
        """Every recorded epoch's logs (a list of dicts)."""
        with open(self.file(self.HISTORY)) as f:
            return json.load(f)

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
        """``{"epoch", "monitor", "metrics"}`` written by :meth:`write_test_at_best`, or ``None``."""
        path = self.file(self.TEST_AT_BEST)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

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
        if not os.path.exists(path):
            return None
        with open(path) as f:
            state = json.load(f)
        state["path"] = os.path.join(self.checkpoints, state["checkpoint"])
        return state if os.path.exists(state["path"]) else None

    def clear_for_overwrite(self):
        """Removes what a fresh start must not resume from (``--overwrite``)."""
        for name in (self.CHECKPOINTS, self.TENSORBOARD):
            shutil.rmtree(self.file(name), ignore_errors=True)

    def remove_final_files(self):
        """Removes the files that only a finished run has, before training again."""
        for name in self.FINAL_FILES:
            if os.path.exists(self.file(name)):
                os.remove(self.file(name))

    # === One process at a time ===

    @contextlib.contextmanager
    def lock(self):
        """Holds the run directory for this process; another live process's hold is an error.

        The hold is an advisory lock (``flock``) on ``RUN_DIR/.lock``, which
        the operating system releases when the process ends, however it
        ends: a lock left by a killed process never blocks a resume.
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
            handle.write(f"process {os.getpid()}\n")
            handle.flush()
            yield self
        finally:
            handle.close()

    def remove_temporaries(self):
        """Removes the temporary files a killed process left (``.NAME.*.tmp*``)."""
        for folder in (self.path, self.checkpoints):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                if name.startswith(".") and ".tmp" in name and name != self.LOCK:
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
                f"{key}: the teacher run {self.path} does not exist. Train it first "
                f"(python -m keras_sdmtcnn.fit RECIPE --run-dir {self.path}) or fix the path.")
        status = self.status()
        if status.get("status") != COMPLETE or not os.path.exists(self.model_path):
            raise UserError(
                f"{key}: {self.path} is not a finished run (run.json says "
                f"{status.get('status', 'nothing')!r}); finish training it first.")
        return self.recipe_dict(), self.model_path


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
