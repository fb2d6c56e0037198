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
  ``degrees(acos(clip(cos(p, g), -1, 1)))``: mean; median as numpy's (the
  middle value, or the mean of the two middle values for an even count),
  within 0.01 degree for any number of pixels (see ``NormalMetrics``);
  fractions under 11.25, 22.5 and 30 degrees (exact counts); and the mean
  cosine similarity.
- Keypoints, edges: ``abs_err`` = mean ``|p - g|`` over all pixels.

A value with no valid pixel in the whole split (no labelled pixel, no valid
depth, no valid normal) is NaN, never 0: 0 would read as a perfect error.
``empty_metrics`` lists them so that commands can say so. Losses never see
NaN (they divide with ``divide_no_nan``).
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
    """``a / b``, NaN where ``b`` is 0 (no valid pixel: undefined, not perfect)."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    nan = tf.constant(float("nan"), a.dtype)
    return tf.where(b > 0, tf.math.divide_no_nan(a, b), nan)


def empty_metrics(results):
    """Names of the values in ``results`` (a dict of floats) that are NaN."""
    return sorted(k for k, v in results.items()
                  if isinstance(v, float) and math.isnan(v))


def warn_empty(results, split, already=None):
    """Prints one ``warning:`` line (stderr) naming the metrics of ``results`` that are NaN.

    ``already`` (a set) holds names warned about before and is updated, so
    that a run warns once per metric, not once per epoch.
    """
    import sys

    names = [k for k in empty_metrics(results) if already is None or k not in already]
    if names:
        print(f"warning: no valid pixel in the {split} split for {', '.join(names)}: "
              "reported as NaN (check that split's targets and ignore label).",
              file=sys.stderr)
        if already is not None:
            already.update(names)
    return names


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
        iou = tf.math.divide_no_nan(diag, union)
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
    """Absolute and relative depth error over valid pixels (ground truth > 0).

    ``per_batch=True`` is the ``mtan`` convention: each value is the mean
    over batches of the batch's pixel mean (a batch without a valid pixel
    is skipped), as the MTAN reference code computes it.
    """

    def __init__(self, name="depth", per_batch=False, **kwargs):
        super().__init__(name=name, **kwargs)
        self.per_batch = bool(per_batch)
        self.abs_sum = self._counter("abs_sum")
        self.rel_sum = self._counter("rel_sum")
        self.count = self._counter("count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        g = tf.cast(y_true, _F64)
        p = tf.cast(y_pred, _F64)
        valid = g > 0
        err = tf.abs(p - g)
        abs_sum = tf.reduce_sum(tf.where(valid, err, 0.0))
        rel_sum = tf.reduce_sum(tf.where(valid, err / tf.where(valid, g, 1.0), 0.0))
        count = tf.reduce_sum(tf.cast(valid, _F64))
        if self.per_batch:
            abs_sum = tf.math.divide_no_nan(abs_sum, count)
            rel_sum = tf.math.divide_no_nan(rel_sum, count)
            count = tf.cast(count > 0, _F64)
        self.abs_sum.assign_add(abs_sum)
        self.rel_sum.assign_add(rel_sum)
        self.count.assign_add(count)

    def result(self):
        return {
            self._key("abs_err"): _ratio(self.abs_sum, self.count),
            self._key("rel_err"): _ratio(self.rel_sum, self.count),
        }

    def get_config(self):
        return {**super().get_config(), "per_batch": self.per_batch}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NormalMetrics(_SplitMetric):
    """Angle error statistics and cosine similarity of surface normals.

    The median must be that of the whole split, which a streaming metric
    cannot keep as a list of every angle. It keeps, per 0.01 degree bin, the
    number of angles and their sum. The median's one or two middle order
    statistics (ranks ``(n + 1) // 2`` and ``n // 2 + 1``, numpy's
    convention) are located by the cumulative counts and each is estimated
    by the mean of its bin, which lies in the same 0.01 degree bin as the
    true value. So the median is within 0.01 degree of numpy's for any
    count, and exact where a middle value is alone in its bin (as for a few
    pixels). No library offers a mergeable exact-enough median under
    ``tf.distribute``'s sum aggregation, hence this.

    ``per_batch=True`` is the ``mtan`` convention: each value is the mean
    over batches of the batch's value (its exact median included; a batch
    without a valid pixel is skipped), as the MTAN reference code computes it.
    """

    BIN_DEGREES = 0.01
    THRESHOLDS = (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0))

    def __init__(self, name="normal", per_batch=False, **kwargs):
        super().__init__(name=name, **kwargs)
        self.per_batch = bool(per_batch)
        self.median_sum = self._counter("median_sum")
        self.num_bins = int(round(180.0 / self.BIN_DEGREES))
        self.histogram = self._counter("histogram", (self.num_bins,))
        self.bin_sums = self._counter("bin_sums", (self.num_bins,))
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
        cosine = tf.math.divide_no_nan(tf.reduce_sum(g * p, axis=-1), norms)
        angle = tf.acos(tf.clip_by_value(cosine, -1.0, 1.0)) * (180.0 / math.pi)
        if self.per_batch:
            self._update_batch_means(angle, cosine)
            return
        bins = tf.clip_by_value(
            tf.cast(tf.floor(angle / self.BIN_DEGREES), tf.int32), 0, self.num_bins - 1
        )
        self.histogram.assign_add(
            tf.math.bincount(bins, minlength=self.num_bins, maxlength=self.num_bins,
                             dtype=_F64)
        )
        self.bin_sums.assign_add(
            tf.math.unsorted_segment_sum(angle, bins, self.num_bins))
        self.angle_sum.assign_add(tf.reduce_sum(angle))
        self.cosine_sum.assign_add(tf.reduce_sum(cosine))
        self.count.assign_add(tf.cast(tf.size(angle), _F64))
        for counter, (_, threshold) in zip(self.within, self.THRESHOLDS):
            counter.assign_add(tf.reduce_sum(tf.cast(angle < threshold, _F64)))

    def _update_batch_means(self, angle, cosine):
        n = tf.size(angle)
        ordered = tf.sort(angle)
        middle = tf.stack([(n - 1) // 2, n // 2])
        median = tf.reduce_mean(tf.gather(ordered, tf.maximum(middle, 0)))
        has = tf.cast(n > 0, _F64)
        self.median_sum.assign_add(tf.where(n > 0, median, 0.0))
        self.angle_sum.assign_add(tf.math.divide_no_nan(tf.reduce_sum(angle), tf.cast(n, _F64)))
        self.cosine_sum.assign_add(
            tf.math.divide_no_nan(tf.reduce_sum(cosine), tf.cast(n, _F64)))
        self.count.assign_add(has)
        for counter, (_, threshold) in zip(self.within, self.THRESHOLDS):
            counter.assign_add(tf.math.divide_no_nan(
                tf.reduce_sum(tf.cast(angle < threshold, _F64)), tf.cast(n, _F64)))

    def _order_statistic(self, cumulative, means, rank):
        """Estimate of the ``rank``-th smallest angle (1-based): its bin's mean."""
        index = tf.minimum(tf.reduce_sum(tf.cast(cumulative < rank, tf.int32)),
                           self.num_bins - 1)
        return means[index]

    def _median(self):
        if self.per_batch:
            return _ratio(self.median_sum, self.count)
        hist = tf.convert_to_tensor(self.histogram)
        total = tf.reduce_sum(hist)
        cumulative = tf.cumsum(hist)
        means = tf.math.divide_no_nan(tf.convert_to_tensor(self.bin_sums), hist)
        lower = self._order_statistic(cumulative, means, tf.floor((total + 1.0) / 2.0))
        upper = self._order_statistic(cumulative, means, tf.floor(total / 2.0) + 1.0)
        return tf.where(total > 0, (lower + upper) / 2.0, tf.constant(float("nan"), _F64))

    def result(self):
        out = {
            self._key("angle_mean"): _ratio(self.angle_sum, self.count),
            self._key("angle_median"): self._median(),
        }
        for counter, (key, _) in zip(self.within, self.THRESHOLDS):
            out[self._key(key)] = _ratio(counter, self.count)
        out[self._key("cosine")] = _ratio(self.cosine_sum, self.count)
        return out

    def get_config(self):
        return {**super().get_config(), "per_batch": self.per_batch}


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


# Evaluation conventions: "pooled" (pixels pooled over the split) and
# "mtan" (the MTAN reference code's mean of per-batch values, for the
# metrics that have a per_batch mode; a confusion matrix pools in both).
CONVENTIONS = ("pooled", "mtan")


def make_task_metric(task, name, num_classes=None, ignore_label=-1, convention="pooled"):
    """The streaming metric of ``task`` (its spec's ``metric``), named ``name``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    spec = get_task(task)
    cls = METRICS[spec.metric]
    if spec.is_classification:
        return cls(num_classes, ignore_label, name=name)
    if convention == "mtan" and cls in (DepthMetrics, NormalMetrics):
        return cls(name=name, per_batch=True)
    return cls(name=name)
