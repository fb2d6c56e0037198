"""Mixed precision: float32 outputs, losses and master weights under every policy."""

import numpy as np
import pytest


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_outputs_and_losses_float32(policy):
    import keras
    from conftest import TASKS3, random_batch, tiny_model

    from keras_sdmtcnn.training.objectives import SeparateObjective
    from keras_sdmtcnn.training.optimizers import FusedAdam

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = tiny_model()
        optimizer = FusedAdam(1e-3)  # fit's Adam (the fused update on float32 master weights)
        if policy == "mixed_float16":  # a small first loss scale: fewer skipped steps
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=8.0)
        model.compile(optimizer, SeparateObjective())
        x, y = random_batch(TASKS3, num_classes=5)
        compute = policy.split("_")[1]
        assert model.get_layer("encoder1_conv1_conv").compute_dtype == compute
        # The Student's heads compute in float32 (models/heads.py), the Teacher's
        # decoders in the policy's type.
        for layer in ("semantic_student_deconv1_deconv", "depth_student_deconv4_bn"):
            assert model.get_layer(layer).compute_dtype == "float32", layer
        assert model.get_layer("depth_teacher_decoder1_conv1_conv").compute_dtype == compute
        out = model(x)
        assert {str(v.dtype) for v in out.values()} == {"<dtype: 'float32'>"} or all(
            "float32" in str(v.dtype) for v in out.values())
        before = [w.numpy().copy() for w in model.trainable_weights]
        for _ in range(24):  # float16's dynamic loss scale skips steps until it fits
            logs = model.train_on_batch(x, y, return_dict=True)
            if int(model.optimizer.iterations.numpy()) > 0:
                break
        assert np.isfinite(logs["loss"])
        # The steps updated the float32 master weights (float16 with loss scaling).
        assert all(w.dtype == "float32" for w in model.trainable_weights)
        assert any(not np.array_equal(a, w.numpy())
                   for a, w in zip(before, model.trainable_weights))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _one_step(policy, weights=None):
    """``(model, logs, its starting weights)`` of one Adam step in ``policy`` from ``weights``."""
    import keras
    from conftest import TASKS3, random_batch, tiny_model

    from keras_sdmtcnn.training.objectives import SeparateObjective
    from keras_sdmtcnn.training.optimizers import FusedAdam

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = tiny_model()
        if weights is not None:
            model.set_weights(weights)
        start = model.get_weights()
        model.compile(FusedAdam(1e-3), SeparateObjective())
        x, y = random_batch(TASKS3, num_classes=5)
        logs = model.train_on_batch(x, y, return_dict=True)
        return model, logs, start
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


# bfloat16 keeps 8 bits of mantissa: one step's losses agree with float32's
# to about 1% (measured: at most 1.1%, the normals' distillation term; the total 0.04%).
BF16_LOSS_RTOL = 0.03


def test_one_bfloat16_step_matches_float32_and_keeps_its_state_float32():
    _, f32_logs, start = _one_step("float32")
    bf16, bf16_logs, _ = _one_step("mixed_bfloat16", weights=start)
    assert bf16.get_layer("encoder1_conv1_conv").compute_dtype == "bfloat16"
    losses = [k for k in f32_logs if k == "loss" or k.endswith("_loss")]
    assert len(losses) >= 4, losses
    for key in losses:
        np.testing.assert_allclose(bf16_logs[key], f32_logs[key], rtol=BF16_LOSS_RTOL, err_msg=key)
    # Master weights and optimizer slots float32; metric accumulators float64.
    assert {str(v.dtype) for v in bf16.trainable_variables} == {"float32"}
    assert {str(v.dtype) for v in bf16.optimizer.variables if "iteration" not in v.path} == {
        "float32"}
    metric_dtypes = {str(v.dtype) for m in bf16.metrics for v in m.variables}
    assert "float64" in metric_dtypes and not metric_dtypes & {"bfloat16", "float16"}


def test_a_saved_bfloat16_model_loads_in_bfloat16_and_exports_from_a_float32_copy(tmp_path):
    import keras
    from conftest import TASKS3, random_batch

    from keras_sdmtcnn.training.saving import in_float32, load_model

    model, _, _ = _one_step("mixed_bfloat16")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # under the global float32 policy
    assert loaded.get_layer("encoder1_conv1_conv").compute_dtype == "bfloat16"
    copy = in_float32(loaded)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    for a, b in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert in_float32(copy) is copy
    x, _ = random_batch(TASKS3, num_classes=5)
    # The float32 copy computes what the bfloat16 model does, to bfloat16's
    # rounding (accumulated over the untrained network's 30-odd layers).
    a, b = loaded(x), copy(x)
    for key in ("depth_teacher", "depth_student", "semantic_teacher"):
        low = np.asarray(keras.ops.convert_to_numpy(a[key]), "float64").ravel()
        high = np.asarray(keras.ops.convert_to_numpy(b[key]), "float64").ravel()
        # Measured: correlation 0.995 or more, mean difference 4% of the mean or less.
        assert np.corrcoef(low, high)[0, 1] > 0.98, key
        assert np.abs(low - high).mean() < 0.1 * np.abs(high).mean(), key


def _recipe(**training):
    from keras_sdmtcnn.config import recipe_from_dict

    return recipe_from_dict({
        "data": {"format": "nyuv2", "root": "/d", "tasks": ["semantic", "depth"],
                 "image_size": [288, 384]},
        "training": {"batch_size": 2, **training}})


@pytest.mark.parametrize("gpu,bf16,size,picks", [
    (False, True, [288, 384], "mixed_bfloat16"),
    (False, True, [48, 64], "float32"),     # too small a step to gain
    (False, False, [288, 384], "float32"),  # no native bfloat16
    (True, True, [288, 384], "float32"),    # GPUs: an explicit choice
])
def test_auto_picks_bfloat16_only_where_it_gains(monkeypatch, gpu, bf16, size, picks):
    from keras_sdmtcnn.process import settings

    monkeypatch.setattr(settings, "has_gpu", lambda: gpu)
    monkeypatch.setattr(settings, "native_bf16", lambda: bf16)
    recipe = _recipe()
    recipe.data.image_size = size
    assert recipe.training.mixed_precision == "auto"  # the default
    policy, why = settings.choose_precision(recipe)
    assert policy == picks and why.startswith("auto:")


def test_explicit_bfloat16_without_native_support_warns_once(monkeypatch, capsys):
    from keras_sdmtcnn.process import settings

    monkeypatch.setattr(settings, "has_gpu", lambda: False)
    monkeypatch.setattr(settings, "native_bf16", lambda: False)
    assert settings.choose_precision(_recipe(mixed_precision="mixed_bfloat16"))[0] == (
        "mixed_bfloat16")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: this CPU has no native bfloat16")
    assert settings.choose_precision(_recipe(mixed_precision="none"))[0] == "float32"
    assert capsys.readouterr().err == ""


def test_an_unknown_precision_is_refused_with_the_valid_names():
    from keras_sdmtcnn.errors import UserError

    with pytest.raises(UserError) as e:
        _recipe(mixed_precision="bfloat16")
    message = str(e.value)
    assert "training.mixed_precision" in message
    assert all(name in message for name in ("auto", "none", "mixed_float16", "mixed_bfloat16"))


def test_a_resumed_run_keeps_its_precision_or_is_refused_naming_both(monkeypatch, tmp_path):
    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.process import settings
    from keras_sdmtcnn.runs.rundir import RUNNING, RunDir
    from keras_sdmtcnn.workflows.train import started_precision

    monkeypatch.setattr(settings, "has_gpu", lambda: False)
    monkeypatch.setattr(settings, "native_bf16", lambda: False)  # a machine without bf16
    (tmp_path / "run").mkdir()
    run = RunDir(str(tmp_path / "run"))
    run.write_status(RUNNING, precision="mixed_bfloat16")
    state = {"epoch": 3}
    started = started_precision(run, state)
    assert started == "mixed_bfloat16" and started_precision(run, None) is None
    # auto keeps the run's precision (with the warning that it is slow here) ...
    assert settings.choose_precision(_recipe(), started)[0] == "mixed_bfloat16"
    # ... and a different explicit one is refused, naming both.
    with pytest.raises(UserError) as e:
        settings.choose_precision(_recipe(mixed_precision="none"), started)
    assert "mixed_bfloat16" in str(e.value) and "float32" in str(e.value)
