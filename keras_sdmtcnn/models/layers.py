"""Building blocks of the SD-MTCNN graph.

Everything here is either a plain Keras layer wired by a helper function, or a
small registered layer (so a saved ``.keras`` file reloads without
``custom_objects``). Layers know nothing about tasks.

The helpers take a ``name`` prefix and give every layer they create an
explicit, stage-indexed name (``encoder2_conv1``, ``depth_student_deconv3``),
so summaries, checkpoints and sub-models stay readable, and the network's
``ModelConfig`` (``config/schema.py``), whose fields each layer reads where
it needs them.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.kernels import FusedBatchNormalization, MatmulGradConv2D


@keras.saving.register_keras_serializable(package=PACKAGE)
class PoolingMask(layers.Layer):
    """Where 2x2 max pooling took each value from: a 0/1 map at the input's resolution.

    Takes ``[pre_pool, pooled]``: features before 2x2 max pooling and after.
    The result has ``pre_pool``'s shape, with 1 at the position of each
    window's maximum and 0 at the three others. When several positions tie
    for the maximum (frequent after a ReLU: all zeros), the first in
    row-major order wins, as with TensorFlow's max-pool-with-argmax op, so
    SegNet's unpooling (:class:`Unpool2D`) is exact.

    Only reshapes, comparisons, selects, concatenation and max pooling are
    used, all 4-D, so the mask converts to TFLite with builtin ops (tested);
    the argmax pooling op does not, and it also blocks XLA.

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017.
    """

    def call(self, inputs):
        pre_pool, pooled = inputs
        # A view of each window's two rows as axis 1 and its two columns as
        # the two halves of the channel axis: (B*h, 2, w, 2C), a reshape.
        # Hits score by priority (4 for the first position in row-major
        # order, 1 for the last); the window's best score, by 2x2 max pooling
        # of the scores, marks the first hit. About three times faster than
        # slicing out the four corners with strided slices, and everything
        # stays 4-D, which TFLite's kernels and its XNNPACK delegate need.
        shape = ops.shape(pooled)
        w, c = shape[2], shape[3]
        windows = ops.reshape(pre_pool, (-1, 2, w, 2 * c))
        maxima = ops.reshape(pooled, (-1, 1, w, c))
        hit = ops.equal(windows, ops.concatenate([maxima, maxima], axis=-1))
        score = ops.where(hit, _window_priority(pre_pool.shape[-1]), 0.0)
        best = ops.max_pool(ops.reshape(score, ops.shape(pre_pool)), 2, 2)
        best = ops.reshape(best, (-1, 1, w, c))
        # A hit as well: a window without one (NaN) gets no position.
        first = ops.logical_and(hit, ops.equal(score, ops.concatenate([best, best], axis=-1)))
        return ops.reshape(ops.cast(first, pre_pool.dtype), ops.shape(pre_pool))

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])


@keras.saving.register_keras_serializable(package=PACKAGE)
class Unpool2D(layers.Layer):
    """SegNet 2x2 max-unpooling: each value goes back where pooling took it from.

    Takes ``[x, mask]``: decoder features ``x`` at the pooled resolution and
    the :class:`PoolingMask` of the encoder stage. Each value of ``x`` is
    copied to its 2x2 window and multiplied by the mask, so it lands at the
    window's maximum and the three other positions are zero.

    Example:
        >>> pooled = keras.layers.MaxPooling2D()(features)
        >>> mask = PoolingMask()([features, pooled])
        >>> up = Unpool2D()([decoded, mask])
    """

    def call(self, inputs):
        x, mask = inputs
        columns = _interleave_columns(x, x)
        return _interleave_rows(columns, columns) * ops.cast(mask, x.dtype)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Normalize(layers.Layer):
    """Unit vectors along the last axis: ``x * rsqrt(sum(x^2) + epsilon)``.

    Unlike ``UnitNormalization`` (a max with epsilon), this stays finite for
    an exact zero vector in every runtime (TFLite's XNNPACK included): a zero
    vector maps to zero. Computed in float32. The epsilon (on the squared
    norm, as in ``tf.math.l2_normalize``) bounds the gradient for near-zero
    vectors; vectors shorter than about 1e-6 are not rescaled to unit length.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        x = ops.cast(x, "float32")  # the epsilon must not underflow (float16)
        return x * ops.rsqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _window_priority(channels):
    """Priority of the four positions of a 2x2 window in ``PoolingMask``'s view.

    Shape (1, 2, 1, 2 * channels): rows on axis 1, and the left and right
    columns as the two halves of the last axis. The first position in
    row-major order has the highest.
    """
    rows = [[4.0] * channels + [3.0] * channels, [2.0] * channels + [1.0] * channels]
    return np.array(rows, "float32").reshape(1, 2, 1, 2 * channels)


def _interleave_columns(a, b):
    # (B, h, w, C) x2 -> (B, h, 2w, C) with a at even and b at odd columns.
    shape = ops.shape(a)
    stacked = ops.stack([a, b], axis=3)
    return ops.reshape(stacked, (-1, shape[1], shape[2] * 2, shape[3]))


def _interleave_rows(a, b):
    # (B, h, W, C) x2 -> (B, 2h, W, C) with a at even and b at odd rows.
    shape = ops.shape(a)
    stacked = ops.stack([a, b], axis=2)
    return ops.reshape(stacked, (-1, shape[1] * 2, shape[2], shape[3]))


def batch_norm(x, name, config, dtype=None):
    """The BatchNorm of every block, with ``config``'s momentum and synchronisation.

    The default momentum, 0.9, is PyTorch's default (0.1 there) as in the
    MTAN/SD-MTCNN code lineage; Keras' 0.99 leaves the moving statistics far
    from the data for the first few hundred steps. ``dtype``: the layer's
    dtype policy (default: Keras' global one).
    """
    return FusedBatchNormalization(
        momentum=config.bn_momentum, synchronized=bool(config.synchronized_bn), dtype=dtype,
        name=name)(x)


def conv_bn_relu(x, filters, name, config, kernel_size=3):
    """3x3 convolution (no bias), BatchNorm and ReLU, named ``{name}_conv`` etc.

    ``config`` is the network's ``ModelConfig``. Kernels use He
    initialisation (suited to ReLU; SegNet's choice), so the activations
    keep their scale through the deep Teacher decoders.
    """
    x = MatmulGradConv2D(
        filters, kernel_size, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn", config)
    return layers.ReLU(name=f"{name}_relu")(x)


def conv_stack(x, filters, name, config):
    """A block of conv-BN-ReLU layers, one per entry of ``filters``.

    Layers are named ``{name}_conv{i}`` (1-based) with ``_bn`` / ``_relu``.
    """
    for i, f in enumerate(filters, start=1):
        x = conv_bn_relu(x, f, f"{name}_conv{i}", config)
    return x


def attention_gate(features, context, name, config):
    """Task attention of a Teacher decoder block (MTAN-style).

    A mask is computed from the decoder ``features`` concatenated with the
    encoder ``context`` of the same scale: conv3x3-BN-ReLU, conv3x3-BN,
    sigmoid. The mask (values in [0, 1], one per channel of ``features``)
    gates the features by multiplication.

    Reference:
        Jha et al., "SD-MTCNN", BMVC 2020, Sec. 4.1; Liu et al., "MTAN",
        CVPR 2019.
    """
    filters = features.shape[-1]
    x = layers.Concatenate(name=f"{name}_concat")([features, context])
    x = conv_bn_relu(x, filters, f"{name}_conv1", config)
    x = MatmulGradConv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
        name=f"{name}_conv2_conv",
    )(x)
    x = batch_norm(x, f"{name}_conv2_bn", config)
    mask = layers.Activation("sigmoid", name=f"{name}_mask")(x)
    return layers.Multiply(name=f"{name}_gate")([features, mask])


def deconv_bn_relu(x, filters, name, config, dtype=None):
    """Stride-2 3x3 transposed convolution (doubles H and W), BN, ReLU.

    ``dtype``: the layers' dtype policy (default: Keras' global one).
    """
    x = layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", use_bias=False,
        kernel_initializer="he_normal", dtype=dtype, name=f"{name}_deconv",
    )(x)
    x = batch_norm(x, f"{name}_bn", config, dtype)
    return layers.ReLU(dtype=dtype, name=f"{name}_relu")(x)


def full_precision():
    """The float type of the layers that compute in full precision under any policy.

    Keras' float type: float32, or float64 where that is set (a float64
    model has no float32 part). The output layers and the Student's heads
    use it under a mixed-precision policy.
    """
    return "float64" if keras.config.floatx() == "float64" else "float32"


def output_layer(x, channels, activation, name):
    """The task's prediction layer: a 1x1 convolution and its activation.

    ``activation`` is ``"logits"`` or ``"linear"`` (the convolution's output as
    is) or ``"l2_normalize"`` (unit vectors along channels). The returned
    tensor is named exactly ``name``. It is computed in float32 whatever the
    mixed-precision policy (:func:`full_precision`), so outputs and losses
    stay float32.
    """
    dtype = full_precision()
    if activation in ("logits", "linear"):
        return layers.Conv2D(channels, 1, dtype=dtype, name=name)(x)
    if activation == "l2_normalize":
        x = layers.Conv2D(channels, 1, dtype=dtype, name=f"{name}_conv")(x)
        return L2Normalize(dtype=dtype, name=name)(x)
    raise ValueError(
        f"Unknown output activation {activation!r}; "
        "allowed: 'logits', 'linear', 'l2_normalize'."
    )
