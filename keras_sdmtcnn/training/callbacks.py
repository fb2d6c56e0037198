"""Keras callbacks used by ``fit``: progress, and the run directory's records."""

import math
import os

import keras

from keras_sdmtcnn.data.preprocessing import to_raw_pixels
from keras_sdmtcnn.runs.reporting import epoch_line
from keras_sdmtcnn.tasks import BRANCHES, monitor_higher_is_better
from keras_sdmtcnn.training.metrics import warn_empty


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
            # Progbar's count of steps (internal, pinned to Keras 3.15): an
            # epoch of unknown length ends its bar at the steps it saw.
            self._bar.target = self._bar._seen_so_far
            self._bar.update(self._bar._seen_so_far, finalize=True)
        if self.verbose:
            self.print_fn(epoch_line(epoch + 1, logs or {}, self.tasks))


class RunRecorder(keras.callbacks.Callback):
    """Keeps a run directory's records and checkpoints, epoch by epoch.

    After each epoch: the records (``RunDir.write_history``), then the
    checkpoint that becomes the resume point (``RunDir.save_checkpoint``),
    marked best when ``monitor`` improved. With ``run_dir=None`` (a
    worker that is not the chief) it writes nothing and only watches the
    loss terms.

    A non-finite loss term stops training before anything of that epoch is
    saved; ``bad_term`` names it (a specific term before the total ``loss``).
    A validation metric may be NaN (no valid pixel in the split): that is
    recorded, with one warning per metric, and does not stop training.
    """

    def __init__(self, run_dir, monitor="val_loss", history=None, best=None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        # A task metric that is better higher (mIoU) is maximised; losses and
        # errors are minimised.
        self.maximize = monitor_higher_is_better(monitor)
        self.history = list(history or [])
        self.best = (-math.inf if self.maximize else math.inf) if best is None else best
        self.bad_term = None
        self.finite_before = False  # whether the bad term was finite at an earlier step
        self._seen_finite = set()
        self._warned = set()

    def _check(self, logs):
        bad = sorted((k for k, v in (logs or {}).items()
                      if k.endswith("loss") and not math.isfinite(float(v))),
                     key=lambda k: (k == "loss", k))
        if bad and self.bad_term is None:
            self.bad_term = bad[0]
            self.finite_before = bad[0] in self._seen_finite
            self.model.stop_training = True
        self._seen_finite.update(k for k, v in (logs or {}).items()
                                 if k.endswith("loss") and math.isfinite(float(v)))
        return not bad

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.bad_term is not None or not self._check(logs):
            return
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(record)
        if self.run_dir is None:
            return
        warn_empty(record, "validation", self._warned)
        self.run_dir.write_history(self.history)
        value = record.get(self.monitor, record.get("loss"))
        improved = value > self.best if self.maximize else value < self.best
        if improved:
            self.best = value
        self.run_dir.save_checkpoint(self.model, epoch + 1, self.best, self.monitor, improved)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' ``TensorBoard`` callback, without its batch-end work when nothing is written.

    Writing per epoch (``update_freq="epoch"``, the default), Keras still
    calls ``summary.scalar`` for every log of every batch, with no writer
    set to record them: 2.2 ms of each demo train step (about 2%). That
    call is skipped here when there is no profile trace to run and no graph
    to write; the event files are the same.
    """

    def on_train_batch_end(self, batch, logs=None):
        if (self.update_freq != "epoch" or self._should_trace
                or self._should_write_train_graph):
            super().on_train_batch_end(batch, logs)


class PanelSummary(keras.callbacks.Callback):
    """Every ``every`` epochs, prediction panels of a few validation images in TensorBoard."""

    def __init__(self, log_dir, images, tasks, every=5, image_normalization="unit"):
        super().__init__()
        self.images, self.tasks, self.every = images, tasks, every
        self.image_normalization = image_normalization
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        import numpy as np
        import tensorflow as tf

        from keras_sdmtcnn.runs.pictures import named_outputs, panel

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "panels"))
        # One eager call (0.2-0.3 s for the demo): cheaper than tracing a
        # predict function (1 s) that a run uses twice.
        outputs = {name: np.asarray(value)
                   for name, value in self.model(self.images, training=False).items()}
        pictures = []
        for i, image in enumerate(self.images):
            rows = [(b, named_outputs(outputs, b, self.tasks, i)) for b in BRANCHES]
            raw = to_raw_pixels(image, self.image_normalization)
            pictures.append(np.asarray(panel(raw, rows, self.tasks)))
        with self._writer.as_default():
            tf.summary.image("predictions", np.stack(pictures), step=epoch + 1,
                             max_outputs=len(pictures))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:  # closed here, not left to the process's teardown
            self._writer.close()
            self._writer = None
