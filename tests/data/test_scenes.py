import os

import numpy as np

from keras_sdmtcnn.data import scenes
from keras_sdmtcnn.data.formats import SCENES_CLASSES
from keras_sdmtcnn.data.taskonomy import numpy_targets, taskonomy_dataset


def test_rendering_is_deterministic_and_physically_consistent():
    a, b = scenes.render_scene(7, 48, 64), scenes.render_scene(7, 48, 64)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["rgb"], scenes.render_scene(8, 48, 64)["rgb"])
    labels = a["semantic"]
    valid = labels != scenes.IGNORE_LABEL
    assert np.all((a["depth"] > 0) == valid)  # ignored = invalid depth and normal
    norms = np.linalg.norm(a["normal"], axis=-1)
    np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
    assert np.all(norms[~valid] == 0)
    # Floor pixels face up, towards +y in the camera frame (the camera looks
    # slightly down), ceiling pixels face down.
    assert np.all(a["normal"][labels == 1][:, 1] > 0)
    for key in ("edges", "keypoints"):
        assert a[key].min() >= 0 and a[key].max() <= 1


def test_all_classes_appear_across_scenes():
    seen = set()
    for seed in range(30):
        seen |= set(np.unique(scenes.render_scene(seed, 32, 48)["semantic"]).tolist())
    assert seen == set(range(len(SCENES_CLASSES)))


def test_written_dataset_reads_back_through_the_taskonomy_reader(scenes_root):
    ds, n = taskonomy_dataset(scenes_root, "splits/val.txt",
                              ["semantic", "depth", "normal", "keypoints", "edges"],
                              (48, 64), batch_size=4)
    assert n == 4
    _, y = numpy_targets(ds)
    # val image 0 is scene number num_train (12) of seed 3.
    ref = scenes.render_scene(3 * 1_000_003 + 12, 48, 64)
    np.testing.assert_array_equal(y["semantic"][0], ref["semantic"])
    np.testing.assert_allclose(y["depth"][0, ..., 0], ref["depth"], atol=1 / 1024 + 1e-6)
    np.testing.assert_allclose(y["normal"][0], ref["normal"], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(y["edges"][0, ..., 0], ref["edges"], atol=1 / 65535)


def test_cache_is_reused_and_an_incomplete_one_is_not_trusted(tmp_path):
    root = scenes.ensure_scenes(str(tmp_path), 2, 1, 16, 16, seed=1, verbose=False)
    marker = os.path.join(root, scenes.COMPLETE_MARKER)
    stamp = os.path.getmtime(marker)
    assert scenes.ensure_scenes(str(tmp_path), 2, 1, 16, 16, seed=1, verbose=False) == root
    assert os.path.getmtime(marker) == stamp
    os.remove(marker)  # as if generation had died before finishing
    again = scenes.ensure_scenes(str(tmp_path), 2, 1, 16, 16, seed=1, verbose=False)
    assert again == root and os.path.exists(marker)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".scenes-tmp")]
