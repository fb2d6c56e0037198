import keras
import numpy as np
import pytest
from conftest import random_batch, tiny_model

from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.optimizers import FusedAdam

TASKS = ["semantic", "depth"]


def _metric_values(model):
    return [np.asarray(v) for m in model.metrics for v in m.variables]


def test_metric_reset_is_traced_and_each_call_logs_only_its_own_batch(tmp_path):
    model = tiny_model(TASKS, seed=4)
    model.compile(FusedAdam(1e-3), get_objective("separate"))  # fit's Adam
    x, y = random_batch(TASKS, batch=2, seed=4)

    # train_on_batch resets the trackers before its step: the second call
    # logs that step's loss, not the mean of both.
    first = model.train_on_batch(x, y, return_dict=True)
    # The objective at the weights the second step starts from (batch
    # statistics in training, so this forward pass does not change it).
    expected = float(model._terms(y, model(x, training=True))["loss"])
    second = model.train_on_batch(x, y, return_dict=True)
    assert second["loss"] == pytest.approx(expected, rel=1e-5)
    assert second["loss"] != pytest.approx((first["loss"] + expected) / 2, rel=1e-5)

    model.evaluate(x, y, batch_size=2, verbose=0)
    assert any(np.any(v != 0) for v in _metric_values(model))
    model.reset_metrics()
    assert all(np.all(v == 0) for v in _metric_values(model))
    traced = model.__dict__["_metric_reset"].function

    # New task metrics (another convention): the reset is traced again for them.
    model.set_evaluation_convention("mtan")
    model.evaluate(x, y, batch_size=1, verbose=0)
    assert any(np.any(v != 0) for v in _metric_values(model))
    model.reset_metrics()
    assert all(np.all(v == 0) for v in _metric_values(model))
    assert model.__dict__["_metric_reset"].function is not traced

    # Not part of the model: the saved file reloads and resets as before.
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded.evaluate(x, y, batch_size=2, verbose=0)
    loaded.reset_metrics()
    assert all(np.all(v == 0) for v in _metric_values(loaded))
