import numpy as np
import pytest
import tensorflow as tf

from keras_sdmtcnn.training import losses


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def setup_module():
    global RNG
    RNG = np.random.default_rng(1)


def test_cross_entropy_with_ignore_label():
    logits = RNG.normal(size=(2, 4, 5, 6)).astype("float32")
    labels = RNG.integers(0, 6, (2, 4, 5))
    labels[0, 0, :3] = -1
    labels[1, 2, 2] = 255  # outside [0, C): ignored too
    valid = (labels >= 0) & (labels < 6)
    lp = np_log_softmax(logits.astype("float64"))
    nll = -np.take_along_axis(lp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    expected = nll[valid].mean()
    got = losses.CrossEntropy(ignore_label=-1)(labels, logits)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_masked_l1_and_masked_pixels_do_not_count():
    g = RNG.uniform(0.5, 3, (2, 4, 4, 1)).astype("float32")
    g[0, 0, 0] = 0
    g[1, 3, :] = 0
    p = RNG.normal(size=g.shape).astype("float32")
    valid = g > 0
    expected = np.abs(p - g)[valid].mean()
    loss = losses.MaskedL1()
    np.testing.assert_allclose(float(loss(g, p)), expected, rtol=1e-5)
    p2 = p.copy()
    p2[~valid] += 100.0  # change only masked pixels
    np.testing.assert_allclose(float(loss(g, p2)), float(loss(g, p)), rtol=0)


def test_cosine_loss_and_masked_pixels_do_not_count():
    g = RNG.normal(size=(2, 3, 4, 3))
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    g[0, 1, 1] = 0
    p = RNG.normal(size=g.shape)
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    valid = np.any(g != 0, -1)
    expected = 1 - (g * p).sum(-1)[valid].mean()
    loss = losses.CosineLoss()
    np.testing.assert_allclose(float(loss(g.astype("float32"), p.astype("float32"))),
                               expected, rtol=1e-5)
    p2 = p.copy()
    p2[~valid] = -p2[~valid]
    np.testing.assert_allclose(float(loss(g.astype("float32"), p2.astype("float32"))),
                               expected, rtol=1e-5)


def test_l1():
    g = RNG.uniform(size=(2, 3, 3, 1)).astype("float32")
    p = RNG.uniform(size=g.shape).astype("float32")
    np.testing.assert_allclose(float(losses.L1()(g, p)), np.abs(p - g).mean(), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_distillation_with_temperature(temperature):
    t = RNG.normal(size=(2, 3, 4, 5))
    s = RNG.normal(size=t.shape)
    lpt = np_log_softmax(t / temperature)
    lps = np_log_softmax(s / temperature)
    kl = (np.exp(lpt) * (lpt - lps)).sum(-1)
    expected = temperature**2 * kl.mean()
    got = losses.KLDistillation(temperature)(t.astype("float32"), s.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_l2_distillation_both_readings():
    t = RNG.normal(size=(2, 3, 4, 3))
    s = RNG.normal(size=t.shape)
    s[0, 0, 0] = t[0, 0, 0]  # a pixel where they agree: norm 0, finite gradient
    mse = ((s - t) ** 2).mean()
    euclid = np.linalg.norm(s - t, axis=-1).mean()
    t32, s32 = tf.constant(t, tf.float32), tf.Variable(s, dtype=tf.float32)
    np.testing.assert_allclose(float(losses.L2Distillation("mse")(t32, s32)), mse, rtol=1e-5)
    with tf.GradientTape() as tape:
        value = losses.L2Distillation("euclidean")(t32, s32)
    np.testing.assert_allclose(float(value), euclid, rtol=1e-5)
    assert np.all(np.isfinite(tape.gradient(value, s32).numpy()))
    with pytest.raises(ValueError, match="reduction"):
        losses.L2Distillation("l3")


def test_no_valid_pixel_gives_zero_not_nan():
    g = np.zeros((1, 2, 2, 1), "float32")
    assert float(losses.MaskedL1()(g, g + 1)) == 0.0
    assert float(losses.CosineLoss()(np.zeros((1, 2, 2, 3), "float32"),
                                     np.ones((1, 2, 2, 3), "float32"))) == 0.0
    labels = -np.ones((1, 2, 2), "int32")
    assert float(losses.CrossEntropy(-1)(labels, np.zeros((1, 2, 2, 3), "float32"))) == 0.0


def test_losses_serialise():
    for obj in (losses.CrossEntropy(0), losses.KLDistillation(2.0), losses.L2Distillation("euclidean")):
        again = type(obj).from_config(obj.get_config())
        assert again.get_config() == obj.get_config()
