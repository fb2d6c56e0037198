"""The methods (KDAM's Cauchy-Schwarz, Li & Bilen, Baseline-3) against numpy, and new ones
added from outside the package through the public API."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_batch, tiny_network

from keras_sdmtcnn.training import losses
from keras_sdmtcnn.training.methods import FeatureDistillation, TwoStage, expert_features
from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.optimizers import FusedAdam
from keras_sdmtcnn.training.trainer import MultiTaskTrainer


def np_softmax(z, axis):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def np_cs(p, q, axis):
    dot = (p * q).sum(axis)
    return -np.log(dot / np.sqrt((p * p).sum(axis) * (q * q).sum(axis)))


def np_cs_distillation(t, s, kind, temperature):
    b, c = t.shape[0], t.shape[-1]
    t = t.reshape(b, -1, c) / temperature
    s = s.reshape(b, -1, c) / temperature
    axis = -1 if kind == "logits" else 1
    pt, ps = np_softmax(t, axis), np_softmax(s, axis)
    return np_cs(ps, pt, -1).mean() + np_cs(ps, pt, 1).mean()


@pytest.mark.parametrize("kind,channels,temperature", [
    ("logits", 5, 1.0), ("logits", 4, 3.0), ("regression", 1, 1.0), ("regression", 3, 2.0)])
def test_cauchy_schwarz_matches_numpy(kind, channels, temperature):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(2, 4, 6, channels)).astype("float32")
    s = rng.normal(size=(2, 4, 6, channels)).astype("float32")
    term = losses.CauchySchwarzDistillation(kind, temperature)
    got = float(term(tf.constant(t), tf.constant(s)))
    assert got == pytest.approx(np_cs_distillation(t.astype("float64"), s.astype("float64"),
                                                   kind, temperature), rel=1e-5)
    assert got > 0


@pytest.mark.parametrize("kind", ["logits", "regression"])
def test_cauchy_schwarz_is_zero_only_for_identical_distributions(kind):
    rng = np.random.default_rng(1)
    t = tf.constant(rng.normal(size=(2, 4, 4, 3)), tf.float32)
    term = losses.CauchySchwarzDistillation(kind)
    assert abs(float(term(t, t))) < 1e-6
    # Logits shifted by a constant along the normalised axis give the same
    # distribution: still zero. Any other change makes it positive.
    assert abs(float(term(t, t + 2.0))) < 1e-6
    assert float(term(t, t * 1.5)) > 1e-4


def test_cauchy_schwarz_divergence_of_distributions():
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.1, 0.3, 0.6])
    got = losses.cauchy_schwarz_divergence(tf.constant(p), tf.constant(q), epsilon=0.0)
    assert float(got) == pytest.approx(np_cs(p, q, 0), rel=1e-9)
    assert float(losses.cauchy_schwarz_divergence(tf.constant(p), tf.constant(p))) == 0.0


def test_cauchy_schwarz_objective_uses_it_for_every_task():
    x_tasks = ["semantic", "depth"]
    objective = get_objective("separate", distillation="cauchy_schwarz", kd_weight=2.0)
    assert isinstance(objective.distance("semantic"), losses.CauchySchwarzDistillation)
    assert objective.distance("depth").kind == "regression"
    rng = np.random.default_rng(2)
    _, y = random_batch(x_tasks, size=(4, 4))
    pred = {f"{t}_{b}": tf.constant(rng.normal(size=(2, 4, 4, 5 if t == "semantic" else 1)),
                                    tf.float32)
            for t in x_tasks for b in ("teacher", "student")}
    terms = objective(y, pred, x_tasks)
    for task, kind in (("semantic", "logits"), ("depth", "regression")):
        expected = 2.0 * np_cs_distillation(pred[f"{task}_teacher"].numpy().astype("float64"),
                                            pred[f"{task}_student"].numpy().astype("float64"),
                                            kind, 1.0)
        assert float(terms[f"{task}_kd_loss"]) == pytest.approx(expected, rel=1e-5)


def np_normalize(x, eps=1e-6):
    """The authors' normalisation: x / sqrt(sum(x^2) + eps) over the channels."""
    return x / np.sqrt((x ** 2).sum(-1, keepdims=True) + eps)


def test_feature_distance_matches_numpy():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 3, 5, 8))
    b = rng.normal(size=(2, 3, 5, 8))
    expected = ((np_normalize(a) - np_normalize(b)) ** 2).sum(-1).mean()
    got = losses.FeatureDistance()(tf.constant(b, tf.float32), tf.constant(a, tf.float32))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Scale-free: only directions count.
    assert float(losses.FeatureDistance()(tf.constant(b * 3, tf.float32),
                                          tf.constant(b, tf.float32))) < 1e-6


def test_feature_distance_at_small_norms_has_epsilon_inside_the_root():
    # Features of norm ~1e-4: sqrt(|x|^2 + 1e-6) is dominated by epsilon, so
    # they are not stretched to unit length (a clamp of |x|^2 would be).
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1, 2, 3, 8)) * 3e-5
    b = rng.normal(size=(1, 2, 3, 8))
    expected = ((np_normalize(a) - np_normalize(b)) ** 2).sum(-1).mean()
    got = float(losses.FeatureDistance()(tf.constant(b, tf.float32), tf.constant(a, tf.float32)))
    assert got == pytest.approx(expected, rel=1e-4)
    unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    clamped = ((unit - np_normalize(b)) ** 2).sum(-1).mean()
    assert abs(got - clamped) > 0.1


def _config(model):
    return {k: v for k, v in model.get_config().items() if k not in ("name", "trainable")}


def _feature_term(model, task, level="last"):
    return next(t for t in model.method_terms if t.expert_task == task and t.level == level)


@pytest.fixture(scope="module")
def feature_model():
    net = tiny_network(["semantic", "depth"], image_size=(32, 32), seed=0)
    experts = {t: tiny_network([t], image_size=(32, 32), seed=i + 1)
               for i, t in enumerate(["semantic", "depth"])}
    method = FeatureDistillation(_config(net), {t: _config(m) for t, m in experts.items()},
                                 {"depth": 2.0}, learning_rate=0.1)
    model = MultiTaskTrainer(method)
    method.load_experts(model, experts)
    return model, experts


def test_adaptors_and_feature_terms_match_numpy(feature_model):
    model, experts = feature_model
    x, y = random_batch(["semantic", "depth"], size=(32, 32))
    out = model(x, training=False)
    shared = out["shared_features"].numpy()
    for task, weight in (("semantic", 1.0), ("depth", 2.0)):
        # The target is the frozen single-task expert's bottleneck.
        target = experts[task].backbone(x, training=False)["bottleneck"].numpy()
        np.testing.assert_allclose(out[expert_features(task, "last")].numpy(), target,
                                   rtol=1e-5, atol=1e-5)
        # The adaptor is a 1x1 convolution without bias: a per-pixel matrix product.
        term = _feature_term(model, task)
        (kernel,) = term.adaptor.get_weights()
        adapted = np.einsum("bhwc,cd->bhwd", shared, kernel[0, 0])
        expected = weight * ((np_normalize(adapted) - np_normalize(target)) ** 2).sum(-1).mean()
        got = term.values(y, out)[f"{task}_feature_loss"]
        assert float(got) == pytest.approx(expected, rel=1e-4)


def test_feature_distillation_trains_adaptors_not_experts(feature_model):
    model, experts = feature_model
    model.compile(keras.optimizers.Adam(1e-2), get_objective("separate", kd_weight=0.0),
                  run_eagerly=True)
    frozen = model.get_layer("depth_expert_encoder")
    before = [w.numpy().copy() for w in frozen.weights]
    adaptor = _feature_term(model, "depth").adaptor
    kernel = adaptor.get_weights()[0].copy()
    x, y = random_batch(["semantic", "depth"], size=(32, 32))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert {"semantic_feature_loss", "depth_feature_loss"} <= set(logs)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, frozen.weights))
    assert not np.array_equal(kernel, adaptor.get_weights()[0])
    # The exported branches are the multi-task network's, without adaptors.
    assert set(model.student_model().output_names) <= {"semantic_student", "depth_student"}


def test_a_two_stage_trainer_keeps_its_stage1_network_frozen(tmp_path):
    trained = MultiTaskTrainer.for_network(tiny_network(["depth"], image_size=(32, 32), seed=4))
    config = _config(trained.method.network)
    method = TwoStage(config, {**config})
    model = MultiTaskTrainer(method)
    method.load_stage1(model, trained)
    x, y = random_batch(["depth"], size=(32, 32))
    np.testing.assert_allclose(model.predict(x, verbose=0)["depth_teacher"],
                               trained.teacher_model().predict(x, verbose=0)["depth_teacher"],
                               rtol=1e-5, atol=1e-6)
    model.compile(keras.optimizers.Adam(1e-2), get_objective("separate"), run_eagerly=True)
    before = [w.numpy().copy() for w in model.teacher_model().weights]
    student_before = [w.numpy().copy() for w in model.student_model().weights]
    model.fit(x, y, epochs=2, verbose=0)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.teacher_model().weights))
    assert any(not np.array_equal(a, b.numpy())
               for a, b in zip(student_before, model.student_model().weights))
    # The Student network has SD-MTCNN's Student architecture.
    assert model.student_model().count_params() == trained.student_model().count_params()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(model.weights, loaded.weights))
    assert not loaded.teacher_model().trainable


def test_adaptors_train_at_their_own_learning_rate_with_their_weight_decay(feature_model):
    # Adam's first step moves every weight by its learning rate (|m / sqrt(v)| = 1).
    from keras_sdmtcnn.training.optimizers import FusedAdam

    model, _ = feature_model
    rates = model.optimizer_settings()
    assert rates == {"semantic_adaptor": 0.1, "depth_adaptor": 0.1}
    model.compile(FusedAdam(1e-4, epsilon=1e-12, layer_learning_rates=rates),
                  get_objective("separate", kd_weight=0.0))
    adaptor = _feature_term(model, "depth").adaptor
    conv = model.get_layer("multi_task_network").get_layer("bottleneck_conv1_conv")
    before_a, before_c = adaptor.get_weights()[0].copy(), conv.get_weights()[0].copy()
    x, y = random_batch(["semantic", "depth"], size=(32, 32))
    model.train_on_batch(x, y)
    step_a = np.abs(adaptor.get_weights()[0] - before_a)
    step_c = np.abs(conv.get_weights()[0] - before_c)
    np.testing.assert_allclose(step_a[step_a > 0], 0.1, rtol=1e-3)
    np.testing.assert_allclose(step_c[step_c > 0], 1e-4, rtol=1e-2)
    assert (step_a > 0).mean() > 0.9 and (step_c > 0).mean() > 0.9
    assert model.optimizer.get_config()["layer_learning_rates"] == rates


def test_the_adaptors_weight_decay_is_the_authors_l2_penalty():
    net = tiny_network(["depth"], image_size=(32, 32), seed=0)
    expert = tiny_network(["depth"], image_size=(32, 32), seed=5)
    model = MultiTaskTrainer(FeatureDistillation(_config(net), {"depth": _config(expert)},
                                                 weight_decay=5e-4))
    (kernel,) = _feature_term(model, "depth").adaptor.get_weights()
    (penalty,) = model.losses  # the adaptor's alone: the networks have no regulariser
    assert float(penalty) == pytest.approx(5e-4 / 2 * (kernel.astype("float64") ** 2).sum(),
                                           rel=1e-5)


def test_two_levels_add_middle_and_last_terms():
    net = tiny_network(["depth"], image_size=(32, 32), seed=0)
    expert = tiny_network(["depth"], image_size=(32, 32), seed=5)
    method = FeatureDistillation(_config(net), {"depth": _config(expert)}, {"depth": 2.0},
                                 levels=["middle", "last"])
    model = MultiTaskTrainer(method)
    method.load_experts(model, {"depth": expert})
    assert [n for t in model.method_terms for n in t.names()] == [
        "depth_middle_feature_loss", "depth_feature_loss"]
    x, y = random_batch(["depth"], size=(32, 32))
    out = model(x, training=False)
    stages = net.config.stages
    middle = expert.backbone(x, training=False)[f"encoder{stages // 2 + 1}_features"].numpy()
    np.testing.assert_allclose(out[expert_features("depth", "middle")].numpy(), middle,
                               rtol=1e-5, atol=1e-5)
    model.compile(FusedAdam(1e-3), get_objective("separate", kd_weight=0.0))  # fit's Adam
    logs = model.train_on_batch(x, y, return_dict=True)
    parts = sum(logs[k] for k in ("depth_teacher_loss", "depth_student_loss",
                                  "depth_middle_feature_loss", "depth_feature_loss"))
    assert logs["loss"] == pytest.approx(parts, rel=1e-5)
