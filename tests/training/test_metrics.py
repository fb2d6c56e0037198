import numpy as np
import pytest

from keras_sdmtcnn.training.metrics import (
    AbsErrorMetric,
    DepthMetrics,
    NormalMetrics,
    SegmentationMetrics,
)


def np_seg(labels, logits, c, ignore):
    pred = logits.argmax(-1)
    valid = (labels != ignore) & (labels >= 0) & (labels < c)
    cm = np.zeros((c, c))
    np.add.at(cm, (labels[valid], pred[valid]), 1)
    ious = []
    for k in range(c):
        union = cm[k].sum() + cm[:, k].sum() - cm[k, k]
        if union > 0 and k != ignore:
            ious.append(cm[k, k] / union)
    return (np.mean(ious) if ious else 0.0), (np.trace(cm) / cm.sum() if cm.sum() else 0.0)


@pytest.mark.parametrize("ignore", [-1, 0])
def test_segmentation_over_batches_with_ignore_and_absent_class(ignore):
    rng = np.random.default_rng(0)
    c = 6
    batches = []
    for _ in range(3):
        labels = rng.integers(0, 5, (2, 5, 7))  # class 5 is never in the ground truth
        labels[rng.uniform(size=labels.shape) < 0.2] = ignore
        logits = rng.normal(size=(2, 5, 7, c))
        logits[..., 5] -= 100  # ... nor predicted: excluded, not NaN
        logits[..., 4] -= 100  # class 4 in the ground truth, never predicted: IoU 0
        batches.append((labels, logits))
    metric = SegmentationMetrics(c, ignore, name="semantic_teacher")
    for labels, logits in batches:
        metric.update_state(labels, logits)
    result = {k: float(v) for k, v in metric.result().items()}
    all_labels = np.concatenate([b[0] for b in batches])
    all_logits = np.concatenate([b[1] for b in batches])
    miou, acc = np_seg(all_labels, all_logits, c, ignore)
    assert np.isfinite(miou)
    np.testing.assert_allclose(result["semantic_teacher_miou"], miou, rtol=1e-9)
    np.testing.assert_allclose(result["semantic_teacher_pixel_acc"], acc, rtol=1e-9)


def test_depth_is_a_pixel_mean_over_the_split():
    rng = np.random.default_rng(1)
    metric = DepthMetrics(name="depth_student")
    gs, ps = [], []
    for valid_share in (0.9, 0.1):  # very different valid counts per batch
        g = rng.uniform(0.5, 4, (2, 6, 6, 1))
        g[rng.uniform(size=g.shape) > valid_share] = 0
        p = rng.uniform(0.5, 4, g.shape)
        metric.update_state(g, p)
        gs.append(g)
        ps.append(p)
    g, p = np.concatenate(gs), np.concatenate(ps)
    valid = g > 0
    result = {k: float(v) for k, v in metric.result().items()}
    np.testing.assert_allclose(result["depth_student_abs_err"], np.abs(p - g)[valid].mean(), rtol=1e-9)
    np.testing.assert_allclose(result["depth_student_rel_err"],
                               (np.abs(p - g)[valid] / g[valid]).mean(), rtol=1e-9)


def test_normals_angles_median_and_thresholds():
    rng = np.random.default_rng(2)
    metric = NormalMetrics(name="normal_teacher")
    gs, ps = [], []
    for _ in range(3):
        g = rng.normal(size=(2, 8, 8, 3))
        g /= np.linalg.norm(g, axis=-1, keepdims=True)
        g[rng.uniform(size=(2, 8, 8)) < 0.15] = 0
        p = g + rng.normal(scale=0.4, size=g.shape)
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        metric.update_state(g, p)
        gs.append(g)
        ps.append(p)
    g, p = np.concatenate(gs).reshape(-1, 3), np.concatenate(ps).reshape(-1, 3)
    valid = np.any(g != 0, -1)
    cos = np.clip((g[valid] * p[valid]).sum(-1), -1, 1)
    angle = np.degrees(np.arccos(cos))
    r = {k: float(v) for k, v in metric.result().items()}
    np.testing.assert_allclose(r["normal_teacher_angle_mean"], angle.mean(), rtol=1e-6)
    assert abs(r["normal_teacher_angle_median"] - np.median(angle)) < 0.05
    for key, th in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30)):
        np.testing.assert_allclose(r[f"normal_teacher_{key}"], (angle < th).mean(), rtol=1e-9)
    np.testing.assert_allclose(r["normal_teacher_cosine"], cos.mean(), rtol=1e-6)


def test_abs_error():
    rng = np.random.default_rng(3)
    g, p = rng.uniform(size=(2, 4, 4, 1)), rng.uniform(size=(2, 4, 4, 1))
    m = AbsErrorMetric(name="edges_student")
    m.update_state(g, p)
    np.testing.assert_allclose(float(m.result()["edges_student_abs_err"]), np.abs(p - g).mean())


def test_batch_with_no_valid_pixel_gives_zeros_not_nan():
    seg = SegmentationMetrics(4, -1, name="s")
    seg.update_state(-np.ones((1, 3, 3), int), np.zeros((1, 3, 3, 4)))
    depth = DepthMetrics(name="d")
    depth.update_state(np.zeros((1, 3, 3, 1)), np.ones((1, 3, 3, 1)))
    normal = NormalMetrics(name="n")
    normal.update_state(np.zeros((1, 3, 3, 3)), np.ones((1, 3, 3, 3)))
    for m in (seg, depth, normal):
        values = [float(v) for v in m.result().values()]
        assert values and all(v == 0.0 for v in values)


def test_reset_state_clears_the_split():
    m = DepthMetrics(name="d")
    m.update_state(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)))
    m.reset_state()
    m.update_state(np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1)) * 1.5)
    assert float(m.result()["d_abs_err"]) == pytest.approx(0.5)
