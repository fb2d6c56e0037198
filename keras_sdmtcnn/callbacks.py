"""Keras callbacks used by ``fit``: progress, and the run directory's records."""

import csv
import io
import json
import math
import os

import keras

from keras_sdmtcnn.io import atomic_link, atomic_save_model, atomic_write_json, atomic_write_text
from keras_sdmtcnn.reporting import epoch_line


class ProgressLogger(keras.callbacks.Callback):
    """A progress bar per epoch (loss only) and one readable line per epoch."""

    def __init__(self, tasks, epochs, steps=None, verbose=1, print_fn=print):
        super().__init__()
        self.tasks, self.epochs, self.steps = tasks, epochs, steps
        self.verbose, self.print_fn = verbose, print_fn
        self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose:
            self.print_fn(f"Epoch {epoch + 1}/{self.epochs}")
            self._bar = keras.utils.Progbar(
                self.steps, unit_name="step", stateful_metrics=["loss"]
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None and logs:
            self._bar.update(batch + 1, [("loss", float(logs["loss"]))])

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None and self._bar.target is None:
            self._bar.target = self._bar._seen_so_far
            self._bar.update(self._bar._seen_so_far, finalize=True)
        if self.verbose:
            self.print_fn(epoch_line(epoch + 1, logs or {}, self.tasks))


class RunRecorder(keras.callbacks.Callback):
    """Keeps the run directory's records and checkpoints, epoch by epoch.

    After each epoch, in this order, each file atomically: ``metrics.json``
    and ``history.csv``; the full model (weights and optimizer state) as
    ``checkpoints/epoch-NNNN.keras``; ``checkpoints/state.json`` naming it
    (the one source of truth for resuming); then ``checkpoints/last.keras``
    and, when ``monitor`` improved, ``checkpoints/best.keras`` (hard links,
    or copies). A crash at any point leaves a consistent state to resume
    from: at worst the epoch in progress is done again.

    A non-finite loss term stops training before anything of that epoch is
    saved; ``bad_term`` names it (a specific term before the total ``loss``).
    """

    def __init__(self, run_dir, monitor="val_loss", history=None, best=None):
        super().__init__()
        self.run_dir = run_dir
        self.checkpoints = os.path.join(run_dir, "checkpoints")
        self.monitor = monitor
        self.history = list(history or [])
        self.best = math.inf if best is None else best
        self.bad_term = None

    def _check(self, logs):
        bad = sorted((k for k, v in (logs or {}).items() if not math.isfinite(float(v))),
                     key=lambda k: (k == "loss", k))
        if bad:
            self.bad_term = bad[0]
            self.model.stop_training = True
        return not bad

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_term is not None or not self._check(logs):
            return
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(record)
        atomic_write_json(os.path.join(self.run_dir, "metrics.json"), self.history)
        atomic_write_text(os.path.join(self.run_dir, "history.csv"), history_csv(self.history))
        os.makedirs(self.checkpoints, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.keras"
        atomic_save_model(self.model, os.path.join(self.checkpoints, name))
        value = record.get(self.monitor, record.get("loss"))
        improved = value < self.best
        if improved:
            self.best = value
        atomic_write_json(os.path.join(self.checkpoints, "state.json"),
                          {"epoch": epoch + 1, "checkpoint": name, "best": self.best,
                           "monitor": self.monitor})
        atomic_link(os.path.join(self.checkpoints, name),
                    os.path.join(self.checkpoints, "last.keras"))
        if improved:
            atomic_link(os.path.join(self.checkpoints, name),
                        os.path.join(self.checkpoints, "best.keras"))
        for old in os.listdir(self.checkpoints):
            if old.startswith("epoch-") and old != name:
                os.remove(os.path.join(self.checkpoints, old))


def read_state(run_dir):
    """The resumable state of a run directory, or ``None``."""
    path = os.path.join(run_dir, "checkpoints", "state.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    state["path"] = os.path.join(run_dir, "checkpoints", state["checkpoint"])
    return state if os.path.exists(state["path"]) else None


class PanelSummary(keras.callbacks.Callback):
    """Every ``every`` epochs, prediction panels of a few validation images in TensorBoard."""

    def __init__(self, log_dir, images, tasks, every=5):
        super().__init__()
        self.images, self.tasks, self.every = images, tasks, every
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        import numpy as np
        import tensorflow as tf

        from keras_sdmtcnn.predict import branch_outputs, panel

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "panels"))
        outputs = self.model.predict(self.images, verbose=0)
        pictures = []
        for i, image in enumerate(self.images):
            rows = [(b, branch_outputs(outputs, b, self.tasks, i)) for b in ("teacher", "student")]
            raw = (np.clip(image, 0, 1) * 255).astype(np.uint8)
            pictures.append(np.asarray(panel(raw, rows, self.tasks)))
        with self._writer.as_default():
            tf.summary.image("predictions", np.stack(pictures), step=epoch + 1,
                             max_outputs=len(pictures))
        self._writer.flush()


def history_csv(history):
    columns = []
    for record in history:
        columns += [k for k in record if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()
