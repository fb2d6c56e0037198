"""Speed-only kernels: layers that compute exactly what a Keras layer computes, faster.

Each class here is a subclass of a Keras layer with the same variables,
config and results (tested against numpy); only the kernels that TensorFlow
runs differ. Each applies only where it was measured to help (the switches in
``process/settings.py``, ``KERNELS``) and falls back to its Keras parent
elsewhere.

- :class:`FusedBatchNormalization`: TensorFlow's fused BatchNorm kernel.
- :class:`MatmulGradConv2D`: the kernel gradient of a 3x3 convolution as
  nine matrix products.

"""

import keras
from keras import layers, ops

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.process.settings import KERNELS


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

        # bfloat16 inputs go in as they are: the fused op computes the
        # statistics in float32 itself, and the casts to float32 and back
        # cost 14% of a paper-size mixed_bfloat16 step (measured; docs/benchmarks.md).
        x = inputs
        if keras.backend.standardize_dtype(x.dtype) != "bfloat16":
            x = ops.cast(x, "float32")
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones((channels,))
        beta = self.beta if self.center else tf.zeros((channels,))
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )[:3]
            # The op returns the unbiased (Bessel-corrected) batch variance;
            # Keras' moving variance follows the biased one. With a static
            # shape the factor is a constant (computed in float32 as the
            # graph would: the same bits, a dozen fewer ops per layer to trace).
            variance = variance * _biased_variance_factor(x)
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
            KERNELS["fused_batchnorm"]
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.synchronized
            and not self.renorm
            and self.epsilon >= 1.001e-5  # the fused op's minimum
        )


def _biased_variance_factor(x):
    """``(n - 1) / max(n, 1)`` for the ``n`` values per channel of ``x``, in float32."""
    import numpy as np
    import tensorflow as tf

    if None not in x.shape[:3]:
        n = np.float32(np.prod(x.shape[:3]))
        return np.float32((n - np.float32(1.0)) / max(n, np.float32(1.0)))
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")
    return (count - 1.0) / tf.maximum(count, 1.0)


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
            KERNELS["matmul_conv_grad"]
            and keras.backend.backend() == "tensorflow"
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


