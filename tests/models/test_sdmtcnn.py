import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ALL_TASKS, TASKS3, TINY, random_batch, tiny_model

from keras_sdmtcnn.deploy.tflite import convert_to_tflite, tflite_ops
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN
from keras_sdmtcnn.models.size import count_flops, model_size
from keras_sdmtcnn.training.objectives import EnsembleObjective


@pytest.fixture(scope="module")
def flexible():
    """All five tasks, free input size, U-Net decoders without attention for variety."""
    return tiny_model(ALL_TASKS, image_size=(None, None), num_classes=7)


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_output_shapes_of_every_task_and_branch(flexible, size):
    x = np.random.default_rng(0).uniform(size=(2, *size, 3)).astype("float32")
    out = flexible.predict(x, verbose=0)
    channels = {"semantic": 7, "depth": 1, "normal": 3, "keypoints": 1, "edges": 1}
    assert set(out) == {f"{t}_{b}" for t in ALL_TASKS for b in ("teacher", "student")}
    for task, c in channels.items():
        for branch in ("teacher", "student"):
            assert out[f"{task}_{branch}"].shape == (2, *size, c)
    # Unit normals; L2Normalize's epsilon (1e-12 on the squared norm) leaves
    # the rare near-zero vector of an untrained tiny head slightly shorter.
    norms = np.linalg.norm(out["normal_teacher"], axis=-1)
    assert norms.max() <= 1 + 1e-5
    assert (np.abs(norms - 1) < 1e-4).mean() > 0.95


@pytest.mark.parametrize("decoder,attention", [("unet", True), ("segnet", False)])
def test_variants_build_and_run(decoder, attention):
    m = tiny_model(["depth"], decoder=decoder, attention=attention)
    out = m(np.zeros((1, 32, 32, 3), "float32"))
    assert out["depth_teacher"].shape == (1, 32, 32, 1)
    has_gate = any(layer.name.endswith("_attention_gate") for layer in m.layers)
    assert has_gate == attention


def test_layer_names_are_stage_indexed(model3):
    names = {layer.name for layer in model3.layers}
    for expected in ("encoder1_conv1_conv", "encoder4_conv4_conv", "encoder2_pool_mask",
                     "bottleneck_conv1_conv", "depth_teacher_decoder2_unpool",
                     "semantic_teacher_decoder1_attention_mask",
                     "normal_student_deconv3_deconv", "depth_student"):
        assert expected in names


def test_backbone_outputs_are_named_and_masks_mark_the_pooled_maxima(model3):
    from keras_sdmtcnn.models.backbone import SegNetBackbone

    x, _ = random_batch(TASKS3)
    out = model3.backbone(x, training=False)
    # A SegNetBackbone of the same arguments has the same outputs and weights.
    alone = SegNetBackbone(image_size=(32, 32),
                           **{k: v for k, v in TINY.items() if k != "student_filters"})
    assert set(alone.output) == set(out)
    alone.set_weights(model3.backbone.get_weights())
    np.testing.assert_allclose(alone(x, training=False)["bottleneck"], out["bottleneck"],
                               rtol=1e-6)
    assert set(out) == {"bottleneck"} | {f"encoder{i}_{k}" for i in range(1, 5)
                                         for k in ("features", "pool_mask")}
    features, mask = out["encoder1_features"].numpy(), out["encoder1_pool_mask"].numpy()
    assert features.shape == mask.shape == (2, 32, 32, features.shape[-1])
    b, h, w, c = features.shape
    windows = features.reshape(b, h // 2, 2, w // 2, 2, c)
    marked = (windows * mask.reshape(windows.shape)).sum(axis=(2, 4))
    np.testing.assert_array_equal(marked, windows.max(axis=(2, 4)))
    np.testing.assert_array_equal(mask.reshape(windows.shape).sum(axis=(2, 4)), 1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tasks=["depht"]), "Unknown task 'depht'. Allowed tasks"),
    (dict(tasks=[]), "At least one task"),
    (dict(tasks=["depth"], image_size=(30, 32)), "height 30 is not a positive multiple of 16"),
    (dict(tasks=["depth"], width_multiplier=0), "model.width_multiplier must be > 0"),
    (dict(tasks=["depth"], encoder_depths=[2, 2]), "encoder_depths and model.encoder_filters"),
    (dict(tasks=["semantic"], num_classes=1), "num_classes must be >= 2"),
    (dict(tasks=["depth"], decoder="fcn"), "model.decoder must be one of"),
])
def test_bad_arguments_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SDMTCNN(**kwargs)


def test_student_shares_weights_with_the_full_model(model3):
    student = model3.student_model()
    x = np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype("float32")
    full = model3.predict(x, verbose=0)
    sub = student.predict(x, verbose=0)
    np.testing.assert_allclose(sub["depth_student"], full["depth_student"], rtol=1e-6)
    assert not any(n.endswith("_teacher") for n in sub)
    kernel = model3.backbone.get_layer("encoder1_conv1_conv").kernel
    assert any(v is kernel for v in student.weights)
    old = kernel.numpy()
    kernel.assign(old * 2.0)
    try:
        changed = student.predict(x, verbose=0)["depth_student"]
        assert not np.allclose(changed, sub["depth_student"])
    finally:
        kernel.assign(old)
    teacher = model3.teacher_model()
    assert set(teacher.output) == {f"{t}_teacher" for t in TASKS3}
    assert student.count_params() < teacher.count_params() < model3.count_params()


def test_keras_round_trips_without_custom_objects(model3, tmp_path):
    model = tiny_model(seed=1)
    model.compile(keras.optimizers.Adam(1e-3), EnsembleObjective(kd_weight=0.5))
    x, y = random_batch(TASKS3, num_classes=5)
    model.fit(x, y, epochs=1, verbose=0)  # optimizer state and BN statistics too
    for sub in (model, model.student_model(), model.teacher_model()):
        path = os.path.join(tmp_path, f"{sub.name}.keras")
        sub.save(path)
        again = keras.models.load_model(path)
        # Eager calls in inference mode: what predict computes, without tracing twice.
        a, b = sub(x, training=False), again(x, training=False)
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    again = keras.models.load_model(os.path.join(tmp_path, f"{model.name}.keras"))
    assert again.objective.get_config() == model.objective.get_config()
    r1 = model.evaluate(x, y, return_dict=True, verbose=0)
    r2 = again.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(r2["loss"], r1["loss"], rtol=1e-6)
    np.testing.assert_allclose(r2["semantic_student_miou"], r1["semantic_student_miou"])


@pytest.fixture(scope="module")
def conditioned_model():
    """A tiny model whose normal heads output vectors well away from zero.

    An untrained tiny head's pre-normalisation vectors are ~1e-4 long, where
    normalising amplifies every runtime's rounding; a trained head's are not.
    """
    model = tiny_model(seed=2)
    for name in ("normal_teacher_conv", "normal_student_conv"):
        layer = model.get_layer(name)
        layer.kernel.assign(layer.kernel * 100.0)
        layer.bias.assign(np.array([0.3, -0.2, 0.9], "float32"))
    return model


def test_student_converts_to_tflite_with_builtin_ops_only(conditioned_model):
    # The Student as a plain Keras model; each branch's export (the serving
    # graph, the Teacher included) is tested in tests/deploy/test_export.py.
    model = conditioned_model.student_model()
    flat = convert_to_tflite(model, (1, 32, 32, 3))
    ops = tflite_ops(flat)
    assert "CONV_2D" in ops
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    interpreter = tf.lite.Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    expected = model.predict(x, verbose=0)
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    assert len(outputs) == len(expected)
    for key, value in expected.items():  # match outputs by shape and value
        scale = np.abs(value).max()
        assert scale > 0
        assert any(o.shape == value.shape and np.abs(o - value).max() <= 1e-4 * scale
                   for o in outputs), key


def test_student_costs_at_most_35_percent_of_teacher_flops_at_paper_size():
    model = SDMTCNN(TASKS3, num_classes=13, image_size=(288, 384))
    size = model_size(model)
    assert size["student"]["flops"] <= 0.35 * size["teacher"]["flops"]
    # The first encoder convolution by hand: 288*384 pixels, 3->64, 3x3.
    first = model.backbone.get_layer("encoder1_conv1_conv")
    assert count_flops(keras.Model(model.backbone.input, first.output)) == 2 * 288 * 384 * 64 * 27
