import keras
import numpy as np

from keras_sdmtcnn.layers import MaskUnpool2D


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
    got = keras.ops.convert_to_numpy(MaskUnpool2D()([x, pre, pooled]))
    np.testing.assert_allclose(got, numpy_unpool(x, pre), rtol=0, atol=0)
    # Every value of x appears exactly once per window.
    assert np.count_nonzero(got) == np.count_nonzero(x)
