import numpy as np
import pytest
import tensorflow as tf
from conftest import TASKS3, random_batch

from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training import objectives


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_task_loss(task, y, p, log_probs=False):
    if task == "semantic":
        valid = y != -1
        lp = p if log_probs else np_log_softmax(p)
        nll = -np.take_along_axis(lp, np.where(valid, y, 0)[..., None], -1)[..., 0]
        return nll[valid].mean()
    if task == "depth":
        valid = y > 0
        return np.abs(p - y)[valid].mean()
    valid = np.any(y != 0, -1)
    return 1 - (p * y).sum(-1)[valid].mean()


def np_kd(task, t, s):
    if task == "semantic":
        lpt, lps = np_log_softmax(t), np_log_softmax(s)
        return (np.exp(lpt) * (lpt - lps)).sum(-1).mean()
    return ((s - t) ** 2).mean()


def np_average(task, t, s):
    if task == "semantic":
        return np.log((np.exp(np_log_softmax(t)) + np.exp(np_log_softmax(s))) / 2)
    mean = (t + s) / 2
    if task == "normal":
        return mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    return mean


@pytest.fixture(scope="module")
def fixed():
    _, y = random_batch(TASKS3, batch=2, size=(4, 6), num_classes=5)
    rng = np.random.default_rng(5)
    pred = {}
    for task in TASKS3:
        c = {"semantic": 5, "depth": 1, "normal": 3}[task]
        for branch in ("teacher", "student"):
            p = rng.normal(size=(2, 4, 6, c))
            if task == "normal":
                p /= np.linalg.norm(p, axis=-1, keepdims=True)
            pred[output_name(task, branch)] = p
    return y, pred


def as_tf(pred):
    return {k: tf.constant(v, tf.float32) for k, v in pred.items()}


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_separate_matches_eq5(fixed, lam):
    y, pred = fixed
    terms = objectives.SeparateObjective(kd_weight=lam)(y, as_tf(pred), TASKS3, -1)
    total = 0
    for task in TASKS3:
        t, s = pred[f"{task}_teacher"], pred[f"{task}_student"]
        lt, ls = np_task_loss(task, y[task], t), np_task_loss(task, y[task], s)
        kd = lam * np_kd(task, t, s)
        np.testing.assert_allclose(float(terms[f"{task}_teacher_loss"]), lt, rtol=1e-5)
        np.testing.assert_allclose(float(terms[f"{task}_student_loss"]), ls, rtol=1e-5)
        np.testing.assert_allclose(float(terms[f"{task}_kd_loss"]), kd, rtol=1e-5)
        total += lt + ls + kd
    np.testing.assert_allclose(float(terms["loss"]), total, rtol=1e-5)


def test_ensemble_matches_eq6(fixed):
    y, pred = fixed
    terms = objectives.EnsembleObjective(kd_weight=1.0)(y, as_tf(pred), TASKS3, -1)
    total = 0
    for task in TASKS3:
        t, s = pred[f"{task}_teacher"], pred[f"{task}_student"]
        le = np_task_loss(task, y[task], np_average(task, t, s), log_probs=True)
        np.testing.assert_allclose(float(terms[f"{task}_ensemble_loss"]), le, rtol=1e-5)
        total += le + np_kd(task, t, s)
    np.testing.assert_allclose(float(terms["loss"]), total, rtol=1e-5)


def test_teacher_only_is_teacher_task_losses(fixed):
    y, pred = fixed
    obj = objectives.TeacherOnlyObjective()
    terms = obj(y, as_tf(pred), TASKS3, -1)
    expected = sum(np_task_loss(t, y[t], pred[f"{t}_teacher"]) for t in TASKS3)
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert "semantic_kd_loss" not in terms
    assert [n for term in obj.terms(TASKS3) for n in term.names()] == [
        f"{t}_teacher_loss" for t in TASKS3]


def test_task_weights(fixed):
    y, pred = fixed
    base = objectives.SeparateObjective(kd_weight=0.0)(y, as_tf(pred), TASKS3, -1)
    weighted = objectives.SeparateObjective(kd_weight=0.0, task_weights={"depth": 3.0})(
        y, as_tf(pred), TASKS3, -1)
    extra = 2 * (float(base["depth_teacher_loss"]) + float(base["depth_student_loss"]))
    np.testing.assert_allclose(float(weighted["loss"]), float(base["loss"]) + extra, rtol=1e-5)


def _kd_gradients(model, objective, x, y):
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        terms = objective(y, out, TASKS3, -1)
        kd = tf.add_n([terms[f"{t}_kd_loss"] for t in TASKS3])
    variables = model.trainable_variables
    return kd, dict(zip([v.path for v in variables], tape.gradient(kd, variables)))


@pytest.mark.parametrize("name", ["separate", "ensemble"])
def test_lambda_zero_makes_distillation_and_its_gradient_zero(model3, name):
    x, y = random_batch(TASKS3, num_classes=5)
    kd, grads = _kd_gradients(model3, objectives.get_objective(name, kd_weight=0.0), x, y)
    assert float(kd) == 0.0
    assert all(g is None or not np.any(g.numpy()) for g in grads.values())


def test_distillation_gradient_stops_at_the_teacher_by_default(model3):
    x, y = random_batch(TASKS3, num_classes=5)
    _, grads = _kd_gradients(model3, objectives.SeparateObjective(), x, y)
    teacher_only = {k: g for k, g in grads.items() if "_teacher" in k}
    student_only = {k: g for k, g in grads.items() if "_student" in k}
    assert teacher_only and student_only
    assert all(g is None or not np.any(g.numpy()) for g in teacher_only.values())
    assert any(g is not None and np.any(g.numpy()) for g in student_only.values())
    # Shared encoder weights do receive the distillation gradient (through the Student).
    assert any(g is not None and np.any(g.numpy())
               for k, g in grads.items() if k.startswith("encoder1"))
    _, grads = _kd_gradients(model3, objectives.SeparateObjective(detach_teacher=False), x, y)
    assert any(g is not None and np.any(g.numpy())
               for k, g in grads.items() if "_teacher" in k)


def test_objectives_serialise_and_reject_bad_values():
    obj = objectives.EnsembleObjective(kd_weight=0.5, temperature=2.0, regression_kd="euclidean")
    again = objectives.EnsembleObjective.from_config(obj.get_config())
    assert again.get_config() == obj.get_config()
    with pytest.raises(ValueError, match="Unknown objective"):
        objectives.get_objective("seperate")
    with pytest.raises(ValueError, match="kd_weight"):
        objectives.SeparateObjective(kd_weight=-1)


def test_output_monitor_must_be_a_logged_name_and_metrics_keep_their_direction():
    import keras
    from conftest import tiny_model

    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.tasks import monitor_higher_is_better
    from keras_sdmtcnn.workflows.train import check_monitor, logged_names

    model = tiny_model(["semantic", "depth"])
    model.compile(keras.optimizers.Adam(1e-3), objectives.get_objective("separate"))
    names = logged_names(model)
    assert {"loss", "val_loss", "val_semantic_teacher_miou", "val_depth_student_abs_err",
            "semantic_kd_loss"} <= set(names)
    check_monitor("val_semantic_student_miou", model)
    with pytest.raises(UserError, match="Did you mean val_semantic_teacher_miou"):
        check_monitor("val_semantic_teacher_mIoU", model)
    with pytest.raises(UserError, match="Did you mean val_loss"):
        check_monitor("val_los", model)
    assert monitor_higher_is_better("val_semantic_teacher_miou")
    assert not monitor_higher_is_better("val_depth_teacher_abs_err")
    assert not monitor_higher_is_better("val_loss")
