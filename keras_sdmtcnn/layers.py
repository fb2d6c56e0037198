"""Building blocks of the SD-MTCNN graph.

Everything here is either a plain Keras layer wired by a helper function, or a
small registered layer (so a saved ``.keras`` file reloads without
``custom_objects``). Layers know nothing about tasks.

The helpers take a ``name`` prefix and give every layer they create an
explicit, stage-indexed name (``encoder2_conv1``, ``depth_student_deconv3``),
so summaries, checkpoints and sub-models stay readable.
"""

import keras
from keras import layers, ops

PACKAGE = "keras_sdmtcnn"
# PyTorch's default BatchNorm momentum (0.1 there, 0.9 in Keras' convention),
# as in the MTAN/SD-MTCNN code lineage; Keras' 0.99 leaves the moving
# statistics far from the data for the first few hundred steps.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskUnpool2D(layers.Layer):
    """SegNet 2x2 max-unpooling from pooling positions, without argmax indices.

    Takes ``[x, pre_pool, pooled]``: the decoder features ``x`` at the pooled
    resolution, the encoder features before pooling, and the encoder's pooled
    features. Each value of ``x`` is written at the position of its window's
    maximum in ``pre_pool``; the other three positions are zero. When several
    positions of a window tie for the maximum (frequent after a ReLU: all
    zeros), the first in row-major order wins, as with TensorFlow's
    max-pool-with-argmax op; so the result is exact.

    Only strided slices, comparisons, multiplies, stack and reshape are used,
    so the layer converts to TFLite with builtin ops (tested); the argmax
    pooling op does not, and it also blocks XLA.

    Example:
        >>> pooled = keras.layers.MaxPooling2D()(features)
        >>> up = MaskUnpool2D()([decoded, features, pooled])

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017.
    """

    def call(self, inputs):
        x, pre_pool, pooled = inputs
        corners = (
            pre_pool[:, 0::2, 0::2, :],
            pre_pool[:, 0::2, 1::2, :],
            pre_pool[:, 1::2, 0::2, :],
            pre_pool[:, 1::2, 1::2, :],
        )
        not_taken = ops.ones_like(pooled)
        parts = []
        for corner in corners:
            hit = ops.cast(ops.equal(corner, pooled), x.dtype) * not_taken
            parts.append(x * hit)
            not_taken = not_taken * (1.0 - hit)
        top = _interleave_columns(parts[0], parts[1])
        bottom = _interleave_columns(parts[2], parts[3])
        return _interleave_rows(top, bottom)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(layers.BatchNormalization):
    """``BatchNormalization`` computed by TensorFlow's fused kernel where it can be.

    Keras 3 builds BatchNorm from separate moments and arithmetic ops. On
    TensorFlow with 4-D channels-last inputs this layer calls the fused op
    instead (``FusedBatchNormV3``, a single oneDNN kernel forward and
    backward, and foldable into the preceding convolution at inference).
    Measured on the project's 2-core CPU, the paper-size train step is about
    7% faster and inference about 6% (README, Benchmarks).

    The results are those of ``keras.layers.BatchNormalization`` (same
    variables, config, moving-statistics update with the biased batch
    variance; tested against numpy). Anything else falls back to the Keras
    computation: other backends, other ranks or axes, masks, renorm and
    ``synchronized=True`` (cross-replica statistics).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,))
        beta = self.beta if self.center else tf.zeros((channels,))
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )[:3]
            # The op returns the unbiased (Bessel-corrected) batch variance;
            # Keras' moving variance follows the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            y = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )[0]
        return ops.cast(y, self.compute_dtype)

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.synchronized
            and not self.renorm
            and self.epsilon >= 1.001e-5  # the fused op's minimum
        )


# A convolution's kernel gradient goes through matrix products only where
# the layer is wide enough (input times output channels) to win. Measured on
# the project's 2-core CPU against oneDNN's backward-weights kernel: 1.3-1.6x
# faster at the SegNet's 128- and 256-channel scales, 1.0-1.3x at its
# 512-channel ones, and 12% slower at 64 channels and full resolution
# (README, Benchmarks).
MATMUL_GRAD_MIN_CHANNEL_PRODUCT = 128 * 128


@keras.saving.register_keras_serializable(package=PACKAGE)
class MatmulGradConv2D(layers.Conv2D):
    """``Conv2D`` whose kernel gradient is computed as nine matrix products.

    On CPUs, oneDNN's backward-weights kernel for a 3x3 convolution runs at
    about half the speed of its forward kernel (the largest single cost of a
    SegNet train step). For a 3x3, stride-1, ``"same"`` convolution the kernel
    gradient is, for each of the nine taps, one matrix product of the input
    shifted by that tap with the output gradient. Padding both once and
    flattening them to rows of channels makes every shifted input a
    contiguous block of rows, so the nine products read the padded input in
    place, with no copies (the padding rows of the output gradient are zero,
    so products across row and image borders add nothing).

    The forward pass and the input gradient are the usual oneDNN kernels, and
    the layer's variables, config and outputs are those of
    ``keras.layers.Conv2D``; only the rounding of the kernel gradient differs
    (tested against numpy). The matrix-product gradient is used in training,
    with the TensorFlow backend and no GPU, for float32 3x3 stride-1
    ``"same"`` convolutions whose input times output channels reach
    ``MATMUL_GRAD_MIN_CHANNEL_PRODUCT``; anything else is plain ``Conv2D``.
    """

    def call(self, inputs, training=None):
        if not (training and self._matmul_grad_applies(inputs)):
            return super().call(inputs)
        outputs = _conv3x3_with_matmul_kernel_grad(inputs, self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _matmul_grad_applies(self, inputs):
        return (
            keras.backend.backend() == "tensorflow"
            and not _has_gpu()
            and len(inputs.shape) == 4
            and self.data_format == "channels_last"
            and tuple(self.kernel_size) == (3, 3)
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and self.padding == "same"
            and self.compute_dtype == "float32"
            and inputs.shape[-1] * self.filters >= MATMUL_GRAD_MIN_CHANNEL_PRODUCT
        )


def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _conv3x3_with_matmul_kernel_grad(inputs, kernel):
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=k, out_backprop=dy,
                strides=[1, 1, 1, 1], padding="SAME",
            )
            return dx, _conv3x3_kernel_grad(x, dy)

        return tf.nn.conv2d(x, k, strides=1, padding="SAME"), grad

    return conv(inputs, tf.convert_to_tensor(kernel))


def _conv3x3_kernel_grad(x, dy):
    """Kernel gradient of a 3x3 stride-1 "same" convolution, (3, 3, Cin, Cout).

    ``dW[i, j] = sum over pixels p of x_pad[p + (i, j)] (outer) dy[p]``. With
    ``x`` and ``dy`` both zero-padded by one pixel and flattened to rows, the
    tap ``(i, j)`` is a shift by ``(i - 1) * padded_width + (j - 1)`` rows.
    """
    import tensorflow as tf

    shape = tf.shape(x)
    padded_width = shape[2] + 2
    rows = shape[0] * (shape[1] + 2) * padded_width
    pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
    x_rows = tf.reshape(tf.pad(x, pad), (-1, x.shape[-1]))
    dy_rows = tf.reshape(tf.pad(dy, pad), (-1, dy.shape[-1]))
    # Every pixel with a non-zero gradient lies at least one padded row and
    # one pixel from either end, so all nine shifts stay inside x_rows.
    start, stop = padded_width + 1, rows - padded_width - 1
    dy_rows = dy_rows[start:stop]
    taps = []
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            shift = i * padded_width + j
            taps.append(tf.matmul(x_rows[start + shift:stop + shift], dy_rows, transpose_a=True))
    return tf.reshape(tf.stack(taps), (3, 3, x.shape[-1], dy.shape[-1]))


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


def conv_bn_relu(x, filters, name, kernel_size=3, synchronized_bn=False):
    """3x3 convolution (no bias), BatchNorm and ReLU, named ``{name}_conv`` etc.

    Kernels use He initialisation (suited to ReLU; SegNet's choice), so the
    activations keep their scale through the deep Teacher decoders.
    """
    x = MatmulGradConv2D(
        filters, kernel_size, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    x = FusedBatchNormalization(
        momentum=BN_MOMENTUM, synchronized=synchronized_bn, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def conv_stack(x, filters, name, synchronized_bn=False):
    """A block of conv-BN-ReLU layers, one per entry of ``filters``.

    Layers are named ``{name}_conv{i}`` (1-based) with ``_bn`` / ``_relu``.
    """
    for i, f in enumerate(filters, start=1):
        x = conv_bn_relu(x, f, f"{name}_conv{i}", synchronized_bn=synchronized_bn)
    return x


def attention_gate(features, context, name, synchronized_bn=False):
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
    x = conv_bn_relu(x, filters, f"{name}_conv1", synchronized_bn=synchronized_bn)
    x = MatmulGradConv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
        name=f"{name}_conv2_conv",
    )(x)
    x = FusedBatchNormalization(
        momentum=BN_MOMENTUM, synchronized=synchronized_bn, name=f"{name}_conv2_bn"
    )(x)
    mask = layers.Activation("sigmoid", name=f"{name}_mask")(x)
    return layers.Multiply(name=f"{name}_gate")([features, mask])


def deconv_bn_relu(x, filters, name, synchronized_bn=False):
    """Stride-2 3x3 transposed convolution (doubles H and W), BN, ReLU."""
    x = layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_deconv",
    )(x)
    x = FusedBatchNormalization(
        momentum=BN_MOMENTUM, synchronized=synchronized_bn, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def output_layer(x, channels, activation, name):
    """The task's prediction layer: a 1x1 convolution and its activation.

    ``activation`` is ``"logits"`` or ``"linear"`` (the convolution's output as
    is) or ``"l2_normalize"`` (unit vectors along channels). The returned
    tensor is named exactly ``name``. It is computed in float32 whatever the
    mixed-precision policy, so outputs and losses stay float32.
    """
    if activation in ("logits", "linear"):
        return layers.Conv2D(channels, 1, dtype="float32", name=name)(x)
    if activation == "l2_normalize":
        x = layers.Conv2D(channels, 1, dtype="float32", name=f"{name}_conv")(x)
        return L2Normalize(dtype="float32", name=name)(x)
    raise ValueError(
        f"Unknown output activation {activation!r}; "
        "allowed: 'logits', 'linear', 'l2_normalize'."
    )
