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


@pytest.fixture(scope="module")
def compiled():
    model = tiny_model(TASKS, seed=5, num_classes=5)
    model.compile(FusedAdam(1e-3), get_objective("separate"))
    return model


def test_the_python_api_refuses_what_the_commands_refuse(compiled):
    import tensorflow as tf

    from keras_sdmtcnn.errors import UserError

    x, y = random_batch(TASKS, batch=2, num_classes=5)
    raw = (x * 255).round().astype(np.uint8)
    for call in (lambda: compiled.predict(raw, verbose=0),
                 lambda: compiled.predict(raw.astype("float32"), verbose=0),
                 lambda: compiled.evaluate(tf.data.Dataset.from_tensor_slices(
                     (raw, y)).batch(2), verbose=0)):
        with pytest.raises(UserError, match=r"images of (uint8|float32) pixels up to \d+: the "
                                            r"Keras model takes floats scaled"):
            call()
    # Another size is refused every time, also after one evaluation at the model's own.
    compiled.evaluate(x, y, verbose=0)
    small_x, small_y = random_batch(TASKS, batch=2, size=(16, 16), num_classes=5)
    for _ in range(2):
        with pytest.raises(UserError, match=r"images of shape \(2, 16, 16, 3\).*this model "
                                            r"takes 32 x 32 images \(height x width\)"):
            compiled.evaluate(small_x, small_y, verbose=0)
    # A target dict without one of the model's tasks names it.
    with pytest.raises(UserError, match=r"the targets lack task\(s\) 'depth': this model "
                                        r"predicts semantic, depth"):
        compiled.evaluate(x, {"semantic": y["semantic"]}, verbose=0)
    with pytest.raises(UserError, match="kd_weight must be a finite number, got '1.0' "
                                        r"\(str\)"):
        get_objective("separate", kd_weight="1.0")
    with pytest.raises(UserError, match=r"task_weights\['depth'\] must be a finite number"):
        get_objective("separate", task_weights={"depth": None})


def test_evaluate_warns_of_labels_outside_the_classes(compiled, capsys):
    x, y = random_batch(TASKS, batch=2, num_classes=5)
    y = {**y, "semantic": y["semantic"].copy()}
    y["semantic"][0, :3, :] = 7  # 96 pixels of a class the model does not have
    y["semantic"][1, 0, 0] = -5
    compiled.evaluate(x, y, verbose=0)
    err = capsys.readouterr().err
    assert ("warning: 97 semantic labels were outside 0..4 and not the ignore label -1: the "
            "losses and metrics left them out.") in err
    compiled.evaluate(*random_batch(TASKS, batch=2, num_classes=5), verbose=0)
    assert "warning" not in capsys.readouterr().err  # counted afresh each evaluation


def test_load_run_takes_a_path_and_refuses_unknown_splits(finished_run):
    import pathlib

    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.workflows.notebook import load_run

    _, run_dir, _ = finished_run
    model, recipe, datasets = load_run(pathlib.Path(run_dir) / "model.keras", splits="val")
    assert list(datasets) == ["val"]
    with pytest.raises(UserError, match="unknown split 'test'.*The validation split is 'val'"):
        load_run(run_dir, splits=("test",))
    with pytest.raises(UserError, match=r"data.image_size is 64 x 64 \(height x width\), but "
                                        r".*model.keras was built for 32 x 32"):
        load_run(run_dir, overrides=["data.image_size=[64, 64]"])
