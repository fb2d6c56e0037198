import keras
import numpy as np
import tensorflow as tf

from keras_sdmtcnn.models import kernels
from keras_sdmtcnn.models.kernels import FusedBatchNormalization, MatmulGradConv2D
from keras_sdmtcnn.models.layers import PoolingMask, Unpool2D


def numpy_unpool(x, pre):
    """Reference SegNet unpooling: value at the first (row-major) argmax of each window."""
    b, h, w, c = pre.shape
    out = np.zeros_like(pre)
    for n in range(b):
        for i in range(h // 2):
            for j in range(w // 2):
                for k in range(c):
                    window = pre[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, k].ravel()
                    a = int(np.argmax(window))
                    out[n, 2 * i + a // 2, 2 * j + a % 2, k] = x[n, i, j, k]
    return out


def test_mask_unpool_matches_argmax_unpooling_with_ties():
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(2, 8, 6, 3)).astype("float32")
    pre = np.maximum(pre, 0)  # ReLU: many all-zero windows (ties)
    pre[0, :2, :2, 0] = 1.5  # a four-way tie that is not zero
    pooled = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D()(pre))
    x = rng.normal(size=pooled.shape).astype("float32")
    mask = PoolingMask()([pre, pooled])
    got = keras.ops.convert_to_numpy(Unpool2D()([x, mask]))
    # One position per window, the first maximum in row-major order.
    windows = keras.ops.convert_to_numpy(mask).reshape(2, 4, 2, 3, 2, 3).sum(axis=(2, 4))
    np.testing.assert_array_equal(windows, 1)
    np.testing.assert_allclose(got, numpy_unpool(x, pre), rtol=0, atol=0)
    # Every value of x appears exactly once per window.
    assert np.count_nonzero(got) == np.count_nonzero(x)


def test_fused_batch_norm_matches_numpy_in_training_and_inference():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(2, 5, 4, 3)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    gamma, beta, eps = np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, -0.3]), 1e-3
    layer = FusedBatchNormalization(momentum=0.9, epsilon=eps)
    layer.build(x.shape)
    layer.set_weights([gamma, beta, np.zeros(3), np.ones(3)])

    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs, training=True)
        loss = tf.reduce_sum(y * upstream)
    grad = tape.gradient(loss, inputs).numpy()

    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras
    x_hat = (x - mean) / np.sqrt(var + eps)
    np.testing.assert_allclose(y.numpy(), x_hat * gamma + beta, rtol=1e-4, atol=1e-4)
    # Batch-statistics backward pass of BatchNorm.
    dx_hat = upstream * gamma
    expected_grad = (dx_hat - dx_hat.mean(axis=(0, 1, 2))
                     - x_hat * (dx_hat * x_hat).mean(axis=(0, 1, 2))) / np.sqrt(var + eps)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)

    # Inference uses the moving statistics.
    moving_mean, moving_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    expected = (x - moving_mean) / np.sqrt(moving_var + eps) * gamma + beta
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    # Both paths run on the fused kernel (what makes the layer worth having).
    for training in (True, False):
        graph = tf.function(lambda t, training=training: layer(t, training=training))
        ops = graph.get_concrete_function(inputs).graph.get_operations()
        assert any(op.type == "FusedBatchNormV3" for op in ops)


def test_fused_batch_norm_falls_back_to_keras_where_it_cannot_fuse():
    # Rank 2 (no fused kernel): the same results as Keras' own layer.
    x = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    layer, reference = FusedBatchNormalization(), keras.layers.BatchNormalization()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=True)),
                               keras.ops.convert_to_numpy(reference(x, training=True)), atol=1e-6)
    restored = FusedBatchNormalization.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()


def numpy_conv3x3_same(x, kernel):
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    h, w = x.shape[1:3]
    return sum(np.einsum("nhwc,cd->nhwd", padded[:, i:i + h, j:j + w], kernel[i, j])
               for i in range(3) for j in range(3))


def numpy_conv3x3_kernel_grad(x, upstream):
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    h, w = x.shape[1:3]
    return np.stack([np.stack([np.einsum("nhwc,nhwd->cd", padded[:, i:i + h, j:j + w], upstream)
                               for j in range(3)]) for i in range(3)])


def _conv_outputs_and_grads(layer, x, upstream, training):
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs, training=training)
        loss = tf.reduce_sum(y * upstream)
    grad_x, grad_kernel, grad_bias = tape.gradient(loss, [inputs, layer.kernel, layer.bias])
    return y.numpy(), grad_x.numpy(), grad_kernel.numpy(), grad_bias.numpy()


def test_matmul_grad_conv_matches_numpy_and_skips_the_backward_weights_kernel(monkeypatch):
    # Non-square, batch 3, odd sizes: the flattened shifts cross row and
    # image borders, where a wrong offset would show.
    monkeypatch.setattr(kernels, "MATMUL_GRAD_MIN_CHANNEL_PRODUCT", 1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 5, 7, 4)).astype("float32")
    upstream = rng.normal(size=(3, 5, 7, 6)).astype("float32")
    layer = MatmulGradConv2D(6, 3, padding="same")
    layer.build(x.shape)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32")
    layer.set_weights([kernel, rng.normal(size=6).astype("float32")])

    y, grad_x, grad_kernel, grad_bias = _conv_outputs_and_grads(layer, x, upstream, True)
    np.testing.assert_allclose(y, numpy_conv3x3_same(x, kernel) + layer.bias.numpy(), atol=1e-4)
    np.testing.assert_allclose(grad_kernel, numpy_conv3x3_kernel_grad(x, upstream), atol=1e-4)
    # The input gradient is a "same" convolution with the flipped, transposed kernel.
    flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
    np.testing.assert_allclose(grad_x, numpy_conv3x3_same(upstream, flipped), atol=1e-4)
    np.testing.assert_allclose(grad_bias, upstream.sum(axis=(0, 1, 2)), rtol=1e-5)

    # Inference is Keras' own convolution, so results agree to the bit.
    reference = keras.layers.Conv2D(6, 3, padding="same")
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)),
                                  keras.ops.convert_to_numpy(reference(x)))

    def gradient_op_types(conv):
        @tf.function
        def step(inputs):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(conv(inputs, training=True))
            return tape.gradient(loss, conv.kernel)
        return {op.type for op in step.get_concrete_function(tf.constant(x)).graph.get_operations()}

    assert "Conv2DBackpropFilter" not in gradient_op_types(layer)
    # Below the channel threshold the layer is a plain Conv2D, gradient included.
    monkeypatch.setattr(kernels, "MATMUL_GRAD_MIN_CHANNEL_PRODUCT", 4 * 6 + 1)
    narrow = MatmulGradConv2D.from_config(layer.get_config())
    narrow.build(x.shape)
    assert "Conv2DBackpropFilter" in gradient_op_types(narrow)
