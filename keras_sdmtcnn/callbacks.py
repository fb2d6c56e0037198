"""Keras callbacks used by ``fit``: progress, and the run directory's records."""

import csv
import io
import math
import os

import keras

from keras_sdmtcnn.io import atomic_save_model, atomic_write_json, atomic_write_text
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
    """Writes ``metrics.json``, ``history.csv`` and the best and last checkpoints.

    Every file is written atomically after each epoch, so a crash leaves the
    records of every finished epoch. A non-finite loss term stops training
    before anything of that epoch is saved, with a message naming the term;
    the last good checkpoint stays as it was.
    """

    def __init__(self, run_dir, monitor="val_loss"):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.history = []
        self.best = math.inf
        self.bad_term = None

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if not math.isfinite(float(value)):
                self.bad_term = key
                self.model.stop_training = True
                return

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_term is not None:
            return
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        bad = [k for k, v in record.items() if not math.isfinite(v)]
        if bad:
            self.bad_term = bad[0]
            self.model.stop_training = True
            return
        self.history.append(record)
        atomic_write_json(os.path.join(self.run_dir, "metrics.json"), self.history)
        atomic_write_text(os.path.join(self.run_dir, "history.csv"), history_csv(self.history))
        checkpoints = os.path.join(self.run_dir, "checkpoints")
        os.makedirs(checkpoints, exist_ok=True)
        atomic_save_model(self.model, os.path.join(checkpoints, "last.keras"))
        value = record.get(self.monitor, record.get("loss"))
        if value < self.best:
            self.best = value
            atomic_save_model(self.model, os.path.join(checkpoints, "best.keras"))


def history_csv(history):
    columns = []
    for record in history:
        columns += [k for k in record if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()
