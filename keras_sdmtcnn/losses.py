"""Task losses (paper Eq. 2) and Teacher-to-Student distillation terms (Eq. 3-4).

Every loss here is a small serialisable object. Its ``sums(y_true, y_pred)``
returns the replica-local ``(numerator, denominator)``: a sum of per-pixel
(or per-element) losses and the number of pixels (or elements) that count.
Calling the object returns :func:`global_mean` of the two, that is the sum on
this replica divided by the count over the **global** batch (all replicas).
Summed over replicas, as ``tf.distribute`` sums gradients, that is exactly
the mean over the global batch, whatever the number of valid pixels on each
replica.

Reductions (what "mean" means in each term):

- ``CrossEntropy``: mean over the non-ignored pixels of the batch (MTAN's
  ``nll_loss(ignore_index=...)``).
- ``MaskedL1``: mean of ``|p - g|`` over pixels with ``g > 0``.
- ``CosineLoss``: ``1 - mean <p, g>`` over pixels whose ``g`` is non-zero.
- ``L1``: mean of ``|p - g|`` over all elements.
- ``KLDistillation``: ``T^2`` times the mean over pixels of
  ``KL(softmax(t/T) || softmax(s/T))``.
- ``L2Distillation``: Eq. 4's l2 distance. ``reduction="mse"`` (default):
  mean over elements of ``(s - t)^2``; ``reduction="euclidean"``: mean over
  pixels of the per-pixel Euclidean norm ``||s - t||_2`` over channels. We
  default to the squared reading: its gradient shrinks as the Student
  approaches the Teacher and is defined at zero.

A batch with no valid pixel gives a loss of 0 (and no gradient), never NaN.
"""

import keras
import tensorflow as tf

from keras_sdmtcnn.layers import PACKAGE


def global_mean(numerator, denominator):
    """``numerator / sum of denominator over replicas`` (0 when nothing counts).

    Outside a distribution strategy, or with one replica, this is a plain
    ratio.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        denominator = ctx.all_reduce(tf.distribute.ReduceOp.SUM, denominator)
    return tf.math.divide_no_nan(numerator, denominator)


class LossTerm:
    """Base class: ``sums`` gives local (numerator, denominator)."""

    def sums(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred):
        numerator, denominator = self.sums(y_true, y_pred)
        return global_mean(numerator, denominator)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossEntropy(LossTerm):
    """Pixel-wise softmax cross-entropy with an ignore label.

    ``y_pred`` are logits ``(B, H, W, C)``; ``y_true`` integer labels
    ``(B, H, W)``. Pixels equal to ``ignore_label`` or outside ``[0, C)`` do
    not count. Passing log-probabilities instead of logits gives the same
    loss (``log_softmax`` leaves them unchanged), which the ``ensemble``
    objective relies on.
    """

    def __init__(self, ignore_label=-1):
        self.ignore_label = int(ignore_label)

    def sums(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        num_classes = tf.shape(y_pred)[-1]
        labels = tf.cast(y_true, tf.int32)
        valid = (
            tf.not_equal(labels, self.ignore_label)
            & (labels >= 0)
            & (labels < num_classes)
        )
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        log_probs = tf.nn.log_softmax(y_pred, axis=-1)
        nll = -tf.reduce_sum(
            tf.one_hot(safe, num_classes, dtype=log_probs.dtype) * log_probs, -1
        )
        valid = tf.cast(valid, tf.float32)
        return tf.reduce_sum(nll * valid), tf.reduce_sum(valid)

    def get_config(self):
        return {"ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedL1(LossTerm):
    """Mean absolute error over pixels whose target is positive (depth)."""

    def sums(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        valid = tf.cast(y_true > 0, tf.float32)
        return tf.reduce_sum(tf.abs(y_pred - y_true) * valid), tf.reduce_sum(valid)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CosineLoss(LossTerm):
    """``1 - mean <p, g>`` over pixels whose target vector is non-zero (normals)."""

    def sums(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        valid = tf.cast(tf.reduce_any(tf.not_equal(y_true, 0), axis=-1), tf.float32)
        dot = tf.reduce_sum(y_true * y_pred, axis=-1)
        return tf.reduce_sum((1.0 - dot) * valid), tf.reduce_sum(valid)


@keras.saving.register_keras_serializable(package=PACKAGE)
class L1(LossTerm):
    """Mean absolute error over all elements (keypoints, edges)."""

    def sums(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        return tf.reduce_sum(tf.abs(y_pred - y_true)), _count(y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
class KLDistillation(LossTerm):
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over pixels.

    Called as ``term(teacher_logits, student_logits)`` (the Teacher in the
    place of the target). Paper Eq. 3; the temperature and its ``T^2``
    scaling follow Hinton et al. 2015 (``temperature=1`` is the paper).
    """

    def __init__(self, temperature=1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def sums(self, y_true, y_pred):
        t = tf.cast(y_true, tf.float32) / self.temperature
        s = tf.cast(y_pred, tf.float32) / self.temperature
        log_pt = tf.nn.log_softmax(t, axis=-1)
        log_ps = tf.nn.log_softmax(s, axis=-1)
        kl = tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)
        return self.temperature**2 * tf.reduce_sum(kl), _count(kl)

    def get_config(self):
        return {"temperature": self.temperature}


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Distillation(LossTerm):
    """l2 distance between Teacher and Student outputs (paper Eq. 4).

    Args:
        reduction: ``"mse"`` (mean over elements of the squared difference,
            the default) or ``"euclidean"`` (mean over pixels of the
            Euclidean norm of the difference across channels).
    """

    REDUCTIONS = ("mse", "euclidean")

    def __init__(self, reduction="mse"):
        if reduction not in self.REDUCTIONS:
            raise ValueError(
                f"reduction must be one of {self.REDUCTIONS}, got {reduction!r}."
            )
        self.reduction = reduction

    def sums(self, y_true, y_pred):
        diff = tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)
        squared = tf.square(diff)
        if self.reduction == "mse":
            return tf.reduce_sum(squared), _count(squared)
        sq_norm = tf.reduce_sum(squared, axis=-1)
        positive = sq_norm > 0
        # sqrt with a gradient of 0 (not NaN) where the two outputs agree.
        norm = tf.where(positive, tf.sqrt(tf.where(positive, sq_norm, 1.0)), 0.0)
        return tf.reduce_sum(norm), _count(norm)

    def get_config(self):
        return {"reduction": self.reduction}


def _count(x):
    return tf.cast(tf.size(x), tf.float32)


LOSSES = {
    "cross_entropy": CrossEntropy,
    "masked_l1": MaskedL1,
    "cosine": CosineLoss,
    "l1": L1,
    "kl": KLDistillation,
    "l2": L2Distillation,
}


def get_loss(name, **kwargs):
    """Builds the loss registered as ``name`` (see ``LOSSES``)."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; allowed: {', '.join(LOSSES)}.")
    return LOSSES[name](**kwargs)
