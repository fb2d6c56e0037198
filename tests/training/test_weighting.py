"""Loss weightings against MTAN's formulas, and their place in training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_batch, tiny_model

from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.weighting import (
    DynamicWeightAverage,
    EqualWeighting,
    UncertaintyWeighting,
    get_weighting,
)

TASKS = ["semantic", "depth", "normal"]


def mtan_dwa(avg_cost, epoch, temperature=2.0):
    """MTAN's reference code (model_segnet_mtan.py), per epoch index."""
    k = avg_cost.shape[1]
    if epoch in (0, 1):
        return np.ones(k)
    w = avg_cost[epoch - 1] / avg_cost[epoch - 2]
    return k * np.exp(w / temperature) / np.exp(w / temperature).sum()


def test_dwa_matches_mtan_on_a_loss_history():
    history = np.array([[2.0, 1.0, 0.5], [1.5, 0.9, 0.5], [1.0, 0.85, 0.45], [0.9, 0.5, 0.44]])
    dwa = DynamicWeightAverage(TASKS)
    for epoch in range(len(history) + 1):
        np.testing.assert_allclose(dwa.task_weights.numpy(), mtan_dwa(history, epoch), rtol=1e-6)
        if epoch < len(history):
            dwa.end_epoch(dict(zip(TASKS, history[epoch])))
    losses = {t: tf.constant(v) for t, v in zip(TASKS, [1.0, 2.0, 3.0])}
    total, weights = dwa.weigh(losses)
    expected = mtan_dwa(history, len(history))
    assert float(total) == pytest.approx(float(expected @ [1.0, 2.0, 3.0]), rel=1e-6)
    assert sum(float(w) for w in weights.values()) == pytest.approx(3.0, rel=1e-6)


def test_dwa_temperature_changes_the_spread():
    hot, cold = DynamicWeightAverage(TASKS, temperature=10.0), DynamicWeightAverage(TASKS, 0.5)
    for w in (hot, cold):
        w.end_epoch({"semantic": 1.0, "depth": 1.0, "normal": 1.0})
        w.end_epoch({"semantic": 1.0, "depth": 0.5, "normal": 0.8})
    assert np.ptp(cold.task_weights.numpy()) > np.ptp(hot.task_weights.numpy()) > 0


def test_uncertainty_matches_mtan_and_its_gradient():
    weighting = UncertaintyWeighting(TASKS)
    np.testing.assert_allclose(weighting.log_variances.numpy(), [-0.5] * 3)
    s = np.array([0.3, -0.2, 1.1])
    weighting.log_variances.assign(s)
    values = np.array([0.8, 2.5, 0.1])
    with tf.GradientTape() as tape:
        total, _ = weighting.weigh({t: tf.constant(v, tf.float32) for t, v in zip(TASKS, values)})
    # MTAN: sum(1 / (2 * exp(logsigma)) * loss + logsigma / 2)
    assert float(total) == pytest.approx(float(np.sum(values / (2 * np.exp(s)) + s / 2)), rel=1e-6)
    grad = tape.gradient(total, weighting.log_variances).numpy()
    np.testing.assert_allclose(grad, -values * np.exp(-s) / 2 + 0.5, rtol=1e-5)


def test_equal_is_the_plain_sum():
    total, weights = EqualWeighting(TASKS).weigh({t: tf.constant(float(i)) for i, t in
                                                  enumerate(TASKS)})
    assert float(total) == 3.0 and all(float(w) == 1.0 for w in weights.values())
    with pytest.raises(ValueError, match="allowed: equal, dwa, uncertainty"):
        get_weighting("gradnorm", TASKS)


def test_weightings_train_and_survive_a_checkpoint(tmp_path):
    tasks = ["depth", "normal"]
    x, y = random_batch(tasks, batch=2, size=(32, 32))
    for name in ("dwa", "uncertainty"):
        model = tiny_model(tasks)
        # Eagerly: three one-step epochs cost less than tracing the step.
        model.compile(keras.optimizers.Adam(1e-2), get_objective("separate", weighting=name),
                      run_eagerly=True)
        model.fit(x, y, epochs=3, verbose=0)
        if name == "dwa":
            # Three epochs seen: the weights follow the last two epochs' task losses.
            assert float(model.loss_weighting.epochs_seen.numpy()) == 3
            assert not np.allclose(model.loss_weighting.task_weights.numpy(), 1.0)
        else:
            assert not np.allclose(model.loss_weighting.log_variances.numpy(), -0.5)
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        for a, b in zip(model.loss_weighting.weights, loaded.loss_weighting.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
