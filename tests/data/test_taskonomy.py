import os

import numpy as np
import pytest

from keras_sdmtcnn.data.augment import flip_left_right
from keras_sdmtcnn.data.taskonomy import numpy_targets, taskonomy_dataset
from keras_sdmtcnn.errors import UserError

TASKS = ["semantic", "depth", "normal", "keypoints", "edges"]
from fake_data import TASKONOMY_SIZE, _save, write_sample  # noqa: E402

H, W = TASKONOMY_SIZE


def load(root, split=("b1",), size=(H, W), tasks=TASKS):
    split = split if isinstance(split, str) else list(split)
    ds, n = taskonomy_dataset(str(root), split, tasks, size, batch_size=8)
    return numpy_targets(ds), n


def test_decodes_the_real_encodings_exactly(tmp_path):
    rgb = write_sample(tmp_path)
    (x, y), n = load(tmp_path)
    assert n == 1
    np.testing.assert_allclose(x[0], rgb / 255.0, atol=1e-6)
    assert y["semantic"].dtype == np.int32
    np.testing.assert_array_equal(y["semantic"][0, 0], [0, 1, 2, 17, 5, 0])
    d = y["depth"][0, ..., 0]
    assert d[0, 0] == 0.0  # 65535 -> invalid -> 0
    assert d[1, 1] == pytest.approx(1 / 512)
    assert d[3, 3] == pytest.approx(2.0)
    nrm = y["normal"][0]
    np.testing.assert_allclose(nrm[0, 0], [1.0, -1.0, 2 * 128 / 255 - 1], atol=1e-6)
    np.testing.assert_array_equal(nrm[2, 2], [0, 0, 0])
    assert np.all((nrm >= -1) & (nrm <= 1))
    k = y["keypoints"][0, ..., 0]
    assert k[0, 0] == pytest.approx(1.0)
    assert k[1, 1] == pytest.approx(32768 / 65535)
    assert y["edges"][0, 0, 0, 0] == pytest.approx(13107 / 65535)


def test_reads_older_segmentsemantic_and_8bit_edges_by_their_real_bit_depth(tmp_path):
    write_sample(tmp_path, seg_domain="segmentsemantic", edges_8bit=True)
    (_, y), _ = load(tmp_path)
    assert y["semantic"][0, 0, 3] == 17
    np.testing.assert_allclose(y["edges"], 1.0)  # 255 of 8 bits, not 255/65535


def test_resize_keeps_labels_and_invalid_pixels(tmp_path):
    write_sample(tmp_path)
    (x, y), _ = load(tmp_path, size=(8, 12))
    assert x.shape == (1, 8, 12, 3)
    assert set(np.unique(y["semantic"])) <= {0, 1, 2, 5, 17}
    assert np.count_nonzero(y["depth"] == 0) == 4  # one invalid pixel, doubled each way
    assert set(np.unique(y["depth"])) <= {0.0, 1 / 512, 2.0}


def test_flip_negates_normal_x():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(3, 4, 3)).astype("float32")
    targets = {"normal": rng.normal(size=(3, 4, 3)).astype("float32"),
               "semantic": rng.integers(0, 5, (3, 4)).astype("int32"),
               "depth": rng.uniform(size=(3, 4, 1)).astype("float32")}
    x, y = flip_left_right(image, targets)
    np.testing.assert_array_equal(x.numpy(), image[:, ::-1])
    expected = targets["normal"][:, ::-1] * np.array([-1, 1, 1], "float32")
    np.testing.assert_array_equal(y["normal"].numpy(), expected)
    np.testing.assert_array_equal(y["semantic"].numpy(), targets["semantic"][:, ::-1])
    np.testing.assert_array_equal(y["depth"].numpy(), targets["depth"][:, ::-1])


def test_splits_from_txt_and_csv(tmp_path):
    write_sample(tmp_path, "b1", 0)
    write_sample(tmp_path, "b1", 1)
    write_sample(tmp_path, "b2", 0)
    (tmp_path / "train.txt").write_text("b1\n")
    (tmp_path / "pick.csv").write_text("building,point,view\nb2,0,0\nb1,1,0\n")
    _, n = load(tmp_path, split=["b1", "b2"])
    assert n == 3
    ds, n = taskonomy_dataset(str(tmp_path), "train.txt", ["depth"], (H, W), 4)
    assert n == 2
    ds, n = taskonomy_dataset(str(tmp_path), "pick.csv", ["depth"], (H, W), 4)
    assert n == 2


def test_bad_input_names_the_path(tmp_path):
    with pytest.raises(UserError, match="does not exist: set data.root"):
        load(tmp_path / "nowhere")
    write_sample(tmp_path)
    os.remove(tmp_path / "normal" / "b1" / "point_0_view_0_domain_normal.png")
    with pytest.raises(UserError, match=r"Missing file .*point_0_view_0_domain_normal.png"):
        load(tmp_path)
    write_sample(tmp_path)
    corrupt = tmp_path / "depth_zbuffer" / "b1" / "point_0_view_0_domain_depth_zbuffer.png"
    corrupt.write_bytes(b"not a png at all" * 4)
    with pytest.raises(UserError, match=r"domain_depth_zbuffer.png is not a PNG"):
        load(tmp_path)
    data = open(tmp_path / "rgb" / "b1" / "point_0_view_0_domain_rgb.png", "rb").read()
    write_sample(tmp_path)
    truncated = tmp_path / "rgb" / "b1" / "point_0_view_0_domain_rgb.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        load(tmp_path)
    write_sample(tmp_path)
    _save(tmp_path, "depth_zbuffer", "b1", 0, np.ones((H, W), np.uint8))
    with pytest.raises(UserError, match="depth must be a 16-bit PNG, found 8-bit"):
        load(tmp_path)
    write_sample(tmp_path)
    with pytest.raises(UserError, match="lists no building"):
        load(tmp_path, split=[])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="lists no building"):
        load(tmp_path, split="empty.txt")
    with pytest.raises(UserError, match="Building folder .*b9 does not exist"):
        load(tmp_path, split=["b9"])


def test_a_label_outside_the_classes_is_reported_by_check_and_stops_reading(tmp_path):
    import tensorflow as tf

    from keras_sdmtcnn.data.check import check_dataset
    from keras_sdmtcnn.data.values import bad_file

    write_sample(tmp_path)
    path = _save(tmp_path, "segment_semantic", "b1", 0, np.full((H, W), 18, np.uint8))
    assert f"{path}: labels outside 0..17 (ignore = 0)" in check_dataset(
        str(tmp_path), "taskonomy").problems
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        load(tmp_path, tasks=["semantic"])
    assert bad_file(caught.value.message) == (path, "labels outside 0..17 (ignore = 0)")
