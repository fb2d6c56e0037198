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

- ``CauchySchwarzDistillation``: KDAM's Eq. 4-7 (Xu et al., ICCV 2023), the
  inter-task term averaged over pixels plus the intra-task term averaged over
  (image, channel) pairs; see the class for how regression maps become
  distributions.
- ``FeatureDistance``: Li & Bilen's Eq. 4, the squared Euclidean distance
  between feature maps L2-normalised over channels, mean over pixels.

A batch with no valid pixel gives a loss of 0 (and no gradient), never NaN.
"""

import keras
import tensorflow as tf

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.tasks import get_task


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


def cauchy_schwarz_divergence(p, q, axis=-1, epsilon=1e-12):
    """``-log(<p, q> / sqrt(<p, p> <q, q>))`` along ``axis``, for non-negative p, q.

    KDAM's Eq. 4 for discrete distributions (the printed denominator lacks
    the squares of the standard Cauchy-Schwarz divergence, which this is).
    Zero exactly when ``p`` is proportional to ``q`` (equal, for
    distributions), positive otherwise; scale-free in both arguments.
    """
    dot = tf.reduce_sum(p * q, axis=axis)
    norms = tf.reduce_sum(p * p, axis=axis) * tf.reduce_sum(q * q, axis=axis)
    cosine = (dot + epsilon) / (tf.sqrt(norms) + epsilon)
    return -tf.math.log(tf.minimum(cosine, 1.0))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CauchySchwarzDistillation(LossTerm):
    """KDAM's distillation (Xu et al., ICCV 2023, Eq. 4-7) for one task.

    Called as ``term(teacher_output, student_output)`` on ``(B, H, W, C)``
    maps. Both are first made distributions:

    - segmentation (``kind="logits"``): ``softmax(output / T)`` over the
      classes at each pixel;
    - regression (``kind="regression"``: depth, normals, keypoints, edges):
      ``softmax(output / T)`` over the pixels of each image, per channel,
      a spatial distribution that says where the map is high (the
      channel-wise distillation reading; the task's values have no class
      axis to normalise over).

    The **inter-task** term (Eq. 5) is the CS divergence between Teacher and
    Student along the channel axis, averaged over every pixel of the batch;
    the **intra-task** term (Eq. 6) is the CS divergence along the pixel axis
    of each image, averaged over (image, channel) pairs. The paper's
    instances are the rows of a batch; for dense maps we take the pixels of
    one image, so the term does not depend on how a batch is split across
    replicas. For a one-channel regression map the inter term is 0 (there is
    nothing to compare across channels) and the intra term carries the
    knowledge. The value is ``inter + intra`` (the summand of Eq. 7).
    """

    KINDS = ("logits", "regression")

    def __init__(self, kind="logits", temperature=1.0):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.kind = kind
        self.temperature = float(temperature)

    def distributions(self, output):
        """``(B, H*W, C)`` non-negative values that sum to 1 along the normalised axis."""
        x = tf.cast(output, tf.float32) / self.temperature
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], -1, shape[-1]])
        return tf.nn.softmax(x, axis=-1 if self.kind == "logits" else 1)

    def sums(self, y_true, y_pred):
        p_t, p_s = self.distributions(y_true), self.distributions(y_pred)
        inter = cauchy_schwarz_divergence(p_s, p_t, axis=-1)  # (B, H*W)
        intra = cauchy_schwarz_divergence(p_s, p_t, axis=1)  # (B, C)
        # Two means with their own global counts: inter over pixels, intra
        # over (image, channel) pairs.
        return (tf.reduce_sum(inter), _count(inter)), (tf.reduce_sum(intra), _count(intra))

    def __call__(self, y_true, y_pred):
        (inter, pixels), (intra, pairs) = self.sums(y_true, y_pred)
        return global_mean(inter, pixels) + global_mean(intra, pairs)

    def get_config(self):
        return {"kind": self.kind, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureDistance(LossTerm):
    """Li & Bilen's Eq. 4: ``|| a/||a|| - b/||b|| ||^2``, mean over pixels.

    Called as ``term(target_features, adapted_features)`` on ``(B, H, W, C)``
    maps; each pixel's feature vector is divided by
    ``sqrt(sum(x^2) + epsilon)`` over the channels, with the authors'
    ``epsilon = 1e-6`` inside the square root (so a feature of small norm is
    shrunk towards 0, not blown up to unit length), the squared difference
    summed over the channels and averaged over the pixels of the batch.
    Values lie in ``[0, 4]``.
    """

    def __init__(self, epsilon=1e-6):
        self.epsilon = float(epsilon)

    def _normalize(self, x):
        x = tf.cast(x, tf.float32)
        return x * tf.math.rsqrt(tf.reduce_sum(tf.square(x), -1, keepdims=True) + self.epsilon)

    def sums(self, y_true, y_pred):
        a, b = self._normalize(y_pred), self._normalize(y_true)
        distance = tf.reduce_sum(tf.square(a - b), axis=-1)
        return tf.reduce_sum(distance), _count(distance)

    def get_config(self):
        return {"epsilon": self.epsilon}


def _count(x):
    return tf.cast(tf.size(x), tf.float32)


LOSSES = {
    "cross_entropy": CrossEntropy,
    "masked_l1": MaskedL1,
    "cosine": CosineLoss,
    "l1": L1,
    "kl": KLDistillation,
    "l2": L2Distillation,
    "cauchy_schwarz": CauchySchwarzDistillation,
    "feature_distance": FeatureDistance,
}


def task_loss(task, ignore_label=-1):
    """The task loss its spec names; class-label tasks get the ignore label."""
    spec = get_task(task)
    cls = LOSSES[spec.task_loss]
    return cls(ignore_label) if spec.is_classification else cls()


def get_loss(name, **kwargs):
    """Builds the loss registered as ``name`` (see ``LOSSES``)."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; allowed: {', '.join(LOSSES)}.")
    return LOSSES[name](**kwargs)
