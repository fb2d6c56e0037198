import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdmtcnn.training.optimizers import FusedAdam, FusedAdamW


def numpy_adam(w, grads, lr, beta_1=0.9, beta_2=0.999, eps=1e-7, weight_decay=0.0):
    """Kingma & Ba with Keras' epsilon placement; AdamW's decay before the step."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * weight_decay * w
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        w = w - lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + eps)
    return w


@pytest.mark.parametrize("optimizer,weight_decay", [(FusedAdam(0.01), 0.0),
                                                    (FusedAdamW(0.01, weight_decay=0.1), 0.1)])
def test_fused_adam_matches_numpy_and_runs_the_fused_kernel(optimizer, weight_decay):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") * s for s in (1.0, 0.1, 3.0)]
    variable = keras.Variable(w0)
    optimizer.build([variable])
    step = tf.function(lambda g: optimizer.apply([g], [variable]))
    for g in grads:
        step(tf.constant(g))
    expected = numpy_adam(w0.astype("float64"), [g.astype("float64") for g in grads], 0.01,
                          weight_decay=weight_decay)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    graph = step.get_concrete_function(tf.constant(grads[0])).graph
    assert "ResourceApplyAdam" in {op.type for op in graph.get_operations()}
    # A checkpointed compile config restores the same optimizer.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(restored) is type(optimizer)
    assert restored.get_config() == optimizer.get_config()


def test_fused_adam_falls_back_to_keras_for_amsgrad():
    w0 = np.array([1.0, -2.0], "float32")
    fused, reference = keras.Variable(w0), keras.Variable(w0)
    a, b = FusedAdam(0.1, amsgrad=True), keras.optimizers.Adam(0.1, amsgrad=True)
    for g in ([0.5, -1.0], [0.1, 2.0]):
        a.apply([tf.constant(g)], [fused])
        b.apply([tf.constant(g)], [reference])
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), rtol=1e-6)
