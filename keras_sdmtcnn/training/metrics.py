"""Streaming metrics over a whole split, for Teacher and Student alike.

Each metric object covers one task on one branch and accumulates sufficient
statistics (float64 counters) over every batch it sees, so the result is the
value over the whole split, not a mean of per-batch values. ``result()``
returns a dict keyed ``{task}_{branch}_{metric}``; ``model.evaluate(...,
return_dict=True)`` merges those dicts.

Conventions (``docs/conventions.md`` says the same for users):

- Segmentation: a confusion matrix over the split; pixels whose label is the
  ignore label, or outside ``[0, num_classes)``, are dropped. IoU of class c
  is ``cm[c, c] / (row_c + col_c - cm[c, c])``; ``miou`` is the mean over the
  classes present in the ground truth **or** the prediction (a class absent
  from both is excluded instead of giving NaN; the ignore label, when it is
  one of the output channels as in Taskonomy, is excluded too).
  ``pixel_acc`` is ``trace / total``.
- Depth: over pixels with ground truth ``> 0``: ``abs_err`` = mean
  ``|p - g|``, ``rel_err`` = mean ``|p - g| / g``: pixel means over the split
  (LibMTL's convention, not MTAN's mean of batch means).
- Normals: over pixels whose ground truth is non-zero, the angle
  ``degrees(acos(clip(cos(p, g), -1, 1)))``: mean; median from a histogram of
  0.01 degree bins, linearly interpolated (within 0.01 degree of the exact
  median); fractions under 11.25, 22.5 and 30 degrees (exact counts); and the
  mean cosine similarity.
- Keypoints, edges: ``abs_err`` = mean ``|p - g|`` over all pixels.

A split (or batch) with no valid pixel reports 0, never NaN.
"""

import math

import keras
import tensorflow as tf

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.tasks import get_task

_F64 = tf.float64


class _SplitMetric(keras.metrics.Metric):
    """Base: named ``{task}_{branch}``; ``result()`` is a dict of floats."""

    def _counter(self, name, shape=()):
        return self.add_variable(
            shape=shape, initializer="zeros", dtype="float64",
            aggregation="sum", name=name,
        )

    def _key(self, metric):
        return f"{self.name}_{metric}"


def _ratio(a, b):
    return tf.math.divide_no_nan(tf.convert_to_tensor(a), tf.convert_to_tensor(b))


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentationMetrics(_SplitMetric):
    """mIoU and pixel accuracy from a confusion matrix over the split.

    ``update_state(labels, logits)`` with labels ``(B, H, W)`` and logits (or
    probabilities) ``(B, H, W, C)``.
    """

    def __init__(self, num_classes, ignore_label=-1, name="semantic", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.confusion = self._counter("confusion", (self.num_classes,) * 2)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        preds = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), [-1])
        valid = (
            tf.not_equal(labels, self.ignore_label)
            & (labels >= 0)
            & (labels < self.num_classes)
        )
        cm = tf.math.confusion_matrix(
            tf.boolean_mask(labels, valid),
            tf.boolean_mask(preds, valid),
            num_classes=self.num_classes,
            dtype=_F64,
        )
        self.confusion.assign_add(cm)

    def result(self):
        cm = tf.convert_to_tensor(self.confusion)
        diag = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - diag
        counted = union > 0
        if 0 <= self.ignore_label < self.num_classes:
            counted &= tf.not_equal(tf.range(self.num_classes), self.ignore_label)
        iou = _ratio(diag, union)
        counted = tf.cast(counted, _F64)
        return {
            self._key("miou"): _ratio(tf.reduce_sum(iou * counted), tf.reduce_sum(counted)),
            self._key("pixel_acc"): _ratio(tf.reduce_sum(diag), tf.reduce_sum(cm)),
        }

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DepthMetrics(_SplitMetric):
    """Absolute and relative depth error over valid pixels (ground truth > 0)."""

    def __init__(self, name="depth", **kwargs):
        super().__init__(name=name, **kwargs)
        self.abs_sum = self._counter("abs_sum")
        self.rel_sum = self._counter("rel_sum")
        self.count = self._counter("count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        g = tf.cast(y_true, _F64)
        p = tf.cast(y_pred, _F64)
        valid = g > 0
        err = tf.abs(p - g)
        self.abs_sum.assign_add(tf.reduce_sum(tf.where(valid, err, 0.0)))
        rel = tf.where(valid, err / tf.where(valid, g, 1.0), 0.0)
        self.rel_sum.assign_add(tf.reduce_sum(rel))
        self.count.assign_add(tf.reduce_sum(tf.cast(valid, _F64)))

    def result(self):
        return {
            self._key("abs_err"): _ratio(self.abs_sum, self.count),
            self._key("rel_err"): _ratio(self.rel_sum, self.count),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class NormalMetrics(_SplitMetric):
    """Angle error statistics and cosine similarity of surface normals."""

    BIN_DEGREES = 0.01
    THRESHOLDS = (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0))

    def __init__(self, name="normal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_bins = int(round(180.0 / self.BIN_DEGREES))
        self.histogram = self._counter("histogram", (self.num_bins,))
        self.angle_sum = self._counter("angle_sum")
        self.cosine_sum = self._counter("cosine_sum")
        self.count = self._counter("count")
        self.within = [self._counter(key) for key, _ in self.THRESHOLDS]

    def update_state(self, y_true, y_pred, sample_weight=None):
        g = tf.reshape(tf.cast(y_true, _F64), [-1, 3])
        p = tf.reshape(tf.cast(y_pred, _F64), [-1, 3])
        valid = tf.reduce_any(tf.not_equal(g, 0), axis=-1)
        g = tf.boolean_mask(g, valid)
        p = tf.boolean_mask(p, valid)
        norms = tf.norm(g, axis=-1) * tf.norm(p, axis=-1)
        cosine = _ratio(tf.reduce_sum(g * p, axis=-1), norms)
        angle = tf.acos(tf.clip_by_value(cosine, -1.0, 1.0)) * (180.0 / math.pi)
        bins = tf.clip_by_value(
            tf.cast(tf.floor(angle / self.BIN_DEGREES), tf.int32), 0, self.num_bins - 1
        )
        self.histogram.assign_add(
            tf.math.bincount(bins, minlength=self.num_bins, maxlength=self.num_bins,
                             dtype=_F64)
        )
        self.angle_sum.assign_add(tf.reduce_sum(angle))
        self.cosine_sum.assign_add(tf.reduce_sum(cosine))
        self.count.assign_add(tf.cast(tf.size(angle), _F64))
        for counter, (_, threshold) in zip(self.within, self.THRESHOLDS):
            counter.assign_add(tf.reduce_sum(tf.cast(angle < threshold, _F64)))

    def _median(self):
        hist = tf.convert_to_tensor(self.histogram)
        total = tf.reduce_sum(hist)
        cumulative = tf.cumsum(hist)
        half = total / 2.0
        index = tf.minimum(
            tf.reduce_sum(tf.cast(cumulative < half, tf.int32)), self.num_bins - 1
        )
        before = cumulative[index] - hist[index]
        fraction = _ratio(half - before, hist[index])
        median = (tf.cast(index, _F64) + fraction) * self.BIN_DEGREES
        return tf.where(total > 0, median, tf.constant(0.0, _F64))

    def result(self):
        out = {
            self._key("angle_mean"): _ratio(self.angle_sum, self.count),
            self._key("angle_median"): self._median(),
        }
        for counter, (key, _) in zip(self.within, self.THRESHOLDS):
            out[self._key(key)] = _ratio(counter, self.count)
        out[self._key("cosine")] = _ratio(self.cosine_sum, self.count)
        return out


@keras.saving.register_keras_serializable(package=PACKAGE)
class AbsErrorMetric(_SplitMetric):
    """Mean absolute error over all pixels (keypoints, edges)."""

    def __init__(self, name="keypoints", **kwargs):
        super().__init__(name=name, **kwargs)
        self.abs_sum = self._counter("abs_sum")
        self.count = self._counter("count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        err = tf.abs(tf.cast(y_pred, _F64) - tf.cast(y_true, _F64))
        self.abs_sum.assign_add(tf.reduce_sum(err))
        self.count.assign_add(tf.cast(tf.size(err), _F64))

    def result(self):
        return {self._key("abs_err"): _ratio(self.abs_sum, self.count)}


METRICS = {
    "segmentation": SegmentationMetrics,
    "depth": DepthMetrics,
    "normal": NormalMetrics,
    "abs_error": AbsErrorMetric,
}


def make_task_metric(task, name, num_classes=None, ignore_label=-1):
    """The streaming metric of ``task`` (its spec's ``metric``), named ``name``."""
    spec = get_task(task)
    cls = METRICS[spec.metric]
    if spec.is_classification:
        return cls(num_classes, ignore_label, name=name)
    return cls(name=name)
