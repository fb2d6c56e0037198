import numpy as np
import pytest

from keras_sdmtcnn.training.metrics import (
    AbsErrorMetric,
    DepthMetrics,
    NormalMetrics,
    SegmentationMetrics,
    empty_metrics,
    make_task_metric,
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
    assert abs(r["normal_teacher_angle_median"] - np.median(angle)) < 0.01
    for key, th in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30)):
        np.testing.assert_allclose(r[f"normal_teacher_{key}"], (angle < th).mean(), rtol=1e-9)
    np.testing.assert_allclose(r["normal_teacher_cosine"], cos.mean(), rtol=1e-6)


def test_abs_error():
    rng = np.random.default_rng(3)
    g, p = rng.uniform(size=(2, 4, 4, 1)), rng.uniform(size=(2, 4, 4, 1))
    m = AbsErrorMetric(name="edges_student")
    m.update_state(g, p)
    np.testing.assert_allclose(float(m.result()["edges_student_abs_err"]), np.abs(p - g).mean())


def test_reset_state_clears_the_split():
    m = DepthMetrics(name="d")
    m.update_state(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)))
    m.reset_state()
    m.update_state(np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1)) * 1.5)
    assert float(m.result()["d_abs_err"]) == pytest.approx(0.5)


def _normals_at_angles(degrees):
    """Ground truth +z and predictions tilted by ``degrees`` about x: (1, 1, n, 3) each."""
    radians = np.radians(np.asarray(degrees, np.float64))
    g = np.zeros((1, 1, len(radians), 3))
    g[..., 2] = 1.0
    p = np.stack([np.zeros_like(radians), np.sin(radians), np.cos(radians)], -1)[None, None]
    return g, p


@pytest.mark.parametrize("degrees", [
    [7.3],                      # one pixel
    [10.0, 50.0],               # two: the mean of two far-apart middle values
    [1.0, 2.0, 90.0],
    [5.0, 6.0, 40.0, 170.0],    # four
    [20.001, 20.004],           # two in one 0.01-degree bin
])
def test_normal_median_is_numpys_for_few_pixels(degrees):
    metric = NormalMetrics(name="normal_teacher")
    g, p = _normals_at_angles(degrees)
    metric.update_state(g, p)
    median = float(metric.result()["normal_teacher_angle_median"])
    assert abs(median - np.median(degrees)) < 0.01, (median, np.median(degrees))


@pytest.mark.parametrize("pixels", [1000, 1001])
def test_normal_median_even_and_odd_counts_over_batches(pixels):
    rng = np.random.default_rng(pixels)
    degrees = rng.uniform(0, 60, size=pixels)
    metric = NormalMetrics(name="normal_teacher")
    for chunk in np.array_split(degrees, 3):
        metric.update_state(*_normals_at_angles(chunk))
    median = float(metric.result()["normal_teacher_angle_median"])
    assert abs(median - np.median(degrees)) < 0.01


def test_normal_median_full_paper_size_split():
    # Four 288x384 predictions: the median of 442,368 angles.
    rng = np.random.default_rng(7)
    metric = NormalMetrics(name="normal_teacher")
    angles = []
    for _ in range(4):
        g = rng.normal(size=(1, 288, 384, 3))
        g /= np.linalg.norm(g, axis=-1, keepdims=True)
        p = g + rng.normal(scale=0.5, size=g.shape)
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        metric.update_state(g, p)
        cos = np.clip((g * p).sum(-1), -1, 1)
        angles.append(np.degrees(np.arccos(cos)).ravel())
    median = float(metric.result()["normal_teacher_angle_median"])
    assert abs(median - np.median(np.concatenate(angles))) < 0.01


def test_a_split_without_valid_pixels_is_nan_not_perfect():
    seg = SegmentationMetrics(3, ignore_label=255, name="semantic_teacher")
    seg.update_state(np.full((1, 2, 2), 255), np.zeros((1, 2, 2, 3)))
    depth = DepthMetrics(name="depth_teacher")
    depth.update_state(np.zeros((1, 2, 2, 1)), np.ones((1, 2, 2, 1)))
    normal = NormalMetrics(name="normal_teacher")
    normal.update_state(np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2, 3)))
    results = {}
    for metric in (seg, depth, normal):
        results.update({k: float(v) for k, v in metric.result().items()})
    assert all(np.isnan(v) for v in results.values()), results
    assert empty_metrics(results) == sorted(results)
    # One valid pixel makes every value a number again.
    depth.update_state(np.full((1, 1, 1, 1), 2.0), np.ones((1, 1, 1, 1)))
    assert float(depth.result()["depth_teacher_abs_err"]) == 1.0


def _mtan_reference(batches):
    """The MTAN reference code's evaluation, in numpy: per-batch values, then their mean."""
    depth, normal = [], []
    for (dg, dp), (ng, np_) in batches:
        valid = dg > 0
        err = np.abs(dp - dg)[valid]
        depth.append([err.mean(), (err / dg[valid]).mean()])
        g, p = ng.reshape(-1, 3), np_.reshape(-1, 3)
        keep = np.any(g != 0, -1)
        cos = np.clip((g[keep] * p[keep]).sum(-1), -1, 1)
        angle = np.degrees(np.arccos(cos))
        normal.append([angle.mean(), np.median(angle), (angle < 11.25).mean(),
                       (angle < 22.5).mean(), (angle < 30).mean(), cos.mean()])
    return np.mean(depth, 0), np.mean(normal, 0)


def test_mtan_convention_is_the_mean_of_per_batch_values():
    rng = np.random.default_rng(11)
    batches = []
    for size in (2, 2, 1, 3):  # uneven, as a last partial batch is
        dg = rng.uniform(0.5, 5, size=(size, 6, 5, 1))
        dg[rng.uniform(size=dg.shape) < 0.3] = 0
        dp = dg + rng.normal(scale=0.5, size=dg.shape)
        ng = rng.normal(size=(size, 6, 5, 3))
        ng /= np.linalg.norm(ng, axis=-1, keepdims=True)
        ng[rng.uniform(size=(size, 6, 5)) < 0.2] = 0
        np_ = ng + rng.normal(scale=0.6, size=ng.shape)
        np_ /= np.linalg.norm(np_, axis=-1, keepdims=True)
        batches.append(((dg, dp), (ng, np_)))
    depth = make_task_metric("depth", "depth_teacher", convention="mtan")
    normal = make_task_metric("normal", "normal_teacher", convention="mtan")
    pooled = make_task_metric("depth", "depth_teacher")
    for (dg, dp), (ng, np_) in batches:
        depth.update_state(dg, dp)
        normal.update_state(ng, np_)
        pooled.update_state(dg, dp)
    want_depth, want_normal = _mtan_reference(batches)
    got = {k: float(v) for k, v in {**depth.result(), **normal.result()}.items()}
    np.testing.assert_allclose([got["depth_teacher_abs_err"], got["depth_teacher_rel_err"]],
                               want_depth, rtol=1e-9)
    keys = ["angle_mean", "angle_median", "within_11_25", "within_22_5", "within_30", "cosine"]
    np.testing.assert_allclose([got[f"normal_teacher_{k}"] for k in keys], want_normal,
                               rtol=1e-9)
    # The two conventions differ on uneven batches: the pooled value is not a mean of means.
    assert abs(float(pooled.result()["depth_teacher_abs_err"]) - want_depth[0]) > 1e-6


def test_segmentation_pools_in_both_conventions():
    assert not hasattr(make_task_metric("semantic", "s", 3, -1, convention="mtan"),
                       "per_batch")
    with pytest.raises(ValueError, match="convention"):
        make_task_metric("depth", "d", convention="batch")


def test_fit_on_a_split_without_valid_depth_warns_once_and_losses_stay_finite(
        tmp_path, capsys):
    import json
    import os

    from fake_data import MTAN_SIZE, tiny_nyuv2_recipe, write_layout

    from keras_sdmtcnn.workflows.train import fit

    H, W = MTAN_SIZE
    root = str(tmp_path / "nyu")
    write_layout(root, "nyuv2", n_train=2, n_val=2)
    for i in range(2):  # the validation split has no valid depth pixel
        np.save(os.path.join(root, "val", "depth", f"{i}.npy"), np.zeros((H, W, 1), "float32"))
    recipe = tiny_nyuv2_recipe(root, ["semantic", "depth"], epochs=2)
    fit(recipe, str(tmp_path / "run"))
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(history) == 2  # not stopped as a NaN loss would be
    for record in history:
        assert np.isnan(record["val_depth_teacher_abs_err"])
        assert np.isfinite(record["val_semantic_teacher_miou"])
        assert all(np.isfinite(v) for k, v in record.items() if k.endswith("loss"))
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert len(warnings) == 1, warnings  # once per run, not per epoch
    assert "validation split" in warnings[0] and "val_depth_teacher_abs_err" in warnings[0]
