import os

import numpy as np
import pytest
from fake_data import MTAN_SIZE, make_sample, write_layout  # noqa: E402

from keras_sdmtcnn.data import augment
from keras_sdmtcnn.data.mtan import holdout_indices, mtan_dataset
from keras_sdmtcnn.data.taskonomy import numpy_targets
from keras_sdmtcnn.errors import UserError

H, W = MTAN_SIZE


@pytest.fixture(scope="module")
def nyuv2(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyuv2")
    return str(root), write_layout(str(root), "nyuv2")


def test_nyuv2_batches_decode_exactly(nyuv2):
    root, written = nyuv2
    ds, n, _ = mtan_dataset(root, "val", "nyuv2", ["semantic", "depth", "normal"], (H, W), 8)
    assert n == 3
    x, y = numpy_targets(ds)
    for i in range(3):
        ref = written[("val", i)]
        np.testing.assert_array_equal(x[i], ref["image"])
        np.testing.assert_array_equal(y["semantic"][i], ref["label"].astype("int32"))
        np.testing.assert_array_equal(y["depth"][i], ref["depth"])
        np.testing.assert_array_equal(y["normal"][i], ref["normal"])
    assert y["semantic"].dtype == np.int32 and np.all(y["semantic"][:, 0, :4] == -1)
    assert np.all(y["depth"][:, 1, :3] == 0) and np.all(y["normal"][:, 2, :5] == 0)


def test_cityscapes_reads_label_7_or_label_and_says_which(tmp_path):
    write_layout(str(tmp_path / "a"), "cityscapes")
    ds, _, source = mtan_dataset(str(tmp_path / "a"), "train", "cityscapes",
                                 ["semantic", "depth"], (H, W), 4)
    assert source.folders["semantic"] == "label_7"
    written = write_layout(str(tmp_path / "b"), "cityscapes", label_folder="label")
    ds, _, source = mtan_dataset(str(tmp_path / "b"), "train", "cityscapes",
                                 ["semantic", "depth"], (H, W), 8)
    assert source.folders["semantic"] == "label"
    _, y = numpy_targets(ds)
    np.testing.assert_array_equal(y["depth"][0], written[("train", 0)]["depth"])
    with pytest.raises(UserError, match="has no 'normal' task"):
        mtan_dataset(str(tmp_path / "a"), "train", "cityscapes", ["normal"], (H, W), 4)


def test_flip_negates_normal_x_and_mirrors_everything():
    rng = np.random.default_rng(1)
    sample = make_sample(rng, 0, "nyuv2")
    targets = {"semantic": sample["label"].astype("int32"), "depth": sample["depth"],
               "normal": sample["normal"]}
    x, y = augment.flip_left_right(sample["image"], targets)
    np.testing.assert_array_equal(x.numpy(), sample["image"][:, ::-1])
    np.testing.assert_array_equal(y["normal"].numpy()[..., 0], -sample["normal"][:, ::-1, 0])
    np.testing.assert_array_equal(y["normal"].numpy()[..., 1:], sample["normal"][:, ::-1, 1:])
    np.testing.assert_array_equal(y["semantic"].numpy(), targets["semantic"][:, ::-1])


def test_scale_crop_divides_depth_by_the_scale_and_keeps_labels():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(H, W, 3)).astype("float32")
    depth = np.full((H, W, 1), 3.0, "float32")
    depth[:, :4] = 0.0  # invalid stays invalid (nearest)
    label = rng.integers(0, 5, (H, W)).astype("int32")
    x, y = augment.scale_crop(image, {"depth": depth, "semantic": label}, 1.5, 2, 3)
    crop_h, crop_w = int(H / 1.5), int(W / 1.5)
    assert x.shape == (H, W, 3)
    d = y["depth"].numpy()
    assert set(np.unique(d)) <= {0.0, 2.0}  # 3 m seen 1.5x closer
    assert np.any(d == 2.0)
    # Nearest resizing only picks labels from the crop window.
    window = label[2:2 + crop_h, 3:3 + crop_w]
    assert set(np.unique(y["semantic"].numpy())) <= set(np.unique(window))
    x1, y1 = augment.scale_crop(image, {"depth": depth}, 1.0, 0, 0)
    np.testing.assert_allclose(x1.numpy(), image, atol=1e-6)
    np.testing.assert_array_equal(y1["depth"].numpy(), depth)


def test_epochs_are_seeded_and_a_resumed_epoch_replays_exactly(nyuv2):
    from keras_sdmtcnn.data.mtan import mtan_source
    from keras_sdmtcnn.data.pipeline import train_pipeline

    root, _ = nyuv2
    paths, decode, n, _ = mtan_source(root, "train", "nyuv2", ["depth", "normal"], (H, W))

    def batches(seed, initial_epoch=0, in_memory=False):
        ds = train_pipeline(paths, decode, n, 3, seed=seed, epochs=3,
                            initial_epoch=initial_epoch, scale=True, flip=True,
                            in_memory=in_memory)
        return [(x.numpy(), y["depth"].numpy(), y["normal"].numpy()) for x, y in ds]

    full = batches(3)
    assert len(full) == 3 * 2  # 6 samples, batch 3: 2 steps per epoch
    for a, b in zip(full, batches(3)):  # the same seed: the same run
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(full[0][1], full[2][1])  # another order/draw each epoch
    assert not np.array_equal(full[0][1], batches(4)[0][1])  # another seed
    # Decoded once and gathered from memory: the batches of the files, bit
    # for bit, from the start and resumed at epoch 2.
    for a, b in zip(full + full[4:], batches(3, in_memory=True) + batches(3, 2, True)):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    for a, b in zip(full[4:], batches(3, initial_epoch=2)):  # resuming at epoch 2
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_a_training_split_over_the_memory_limit_is_not_kept_in_memory(nyuv2, monkeypatch):
    # (train_pipeline then decodes each epoch's samples from their files.)
    import tensorflow as tf

    from keras_sdmtcnn.data import pipeline
    from keras_sdmtcnn.data.mtan import mtan_source

    root, _ = nyuv2
    paths, decode, n, _ = mtan_source(root, "train", "nyuv2", ["depth"], (H, W))
    paths = {k: tf.constant(v) for k, v in paths.items()}
    image = decode({k: v[0] for k, v in paths.items()})[0]
    sample_mb = (image.shape.num_elements() * 4 + H * W * 4) / 2**20  # image and depth
    assert pipeline._decoded_in_memory(paths, decode, n) is not None
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT_MB", n * sample_mb * 0.99)
    assert pipeline._decoded_in_memory(paths, decode, n) is None
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT_MB", n * sample_mb)
    kept = pipeline._decoded_in_memory(paths, decode, n)
    assert kept[0].shape == (n, H, W, 3) and kept[1]["depth"].shape == (n, H, W, 1)


def test_holdout_is_disjoint_and_stable():
    train, held = holdout_indices(100, 0.1, seed=4)
    assert len(held) == 10 and not set(train) & set(held)
    assert sorted(train + held) == list(range(100))
    assert holdout_indices(100, 0.1, seed=4) == (train, held)
    assert holdout_indices(100, 0.1, seed=5)[1] != held


def test_bad_layouts_name_the_file(tmp_path):
    with pytest.raises(UserError, match="does not exist: set data.root"):
        mtan_dataset(str(tmp_path / "none"), "train", "nyuv2", ["depth"], (H, W), 2)
    root = str(tmp_path / "n")
    write_layout(root, "nyuv2", n_train=3)
    os.remove(os.path.join(root, "train", "depth", "1.npy"))
    with pytest.raises(UserError, match=r"train/depth misses index files \[1\]"):
        mtan_dataset(root, "train", "nyuv2", ["depth"], (H, W), 2)
    write_layout(root, "nyuv2", n_train=3)
    np.save(os.path.join(root, "train", "normal", "2.npy"), np.zeros((H, W, 2), "float32"))
    with pytest.raises(UserError, match=r"normal/2.npy: dtype/shape .* differs"):
        mtan_dataset(root, "train", "nyuv2", ["normal"], (H, W), 2)
    write_layout(root, "nyuv2", n_train=3)
    path = os.path.join(root, "train", "image", "0.npy")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-10])
    with pytest.raises(UserError, match="image/0.npy is truncated"):
        mtan_dataset(root, "train", "nyuv2", ["depth"], (H, W), 2)


def test_data_check_command(nyuv2, tmp_path):
    from keras_sdmtcnn.data.check import check_dataset

    root, _ = nyuv2
    report = check_dataset(root, "nyuv2")
    assert not report.problems, report.problems
    assert any(line.startswith("train: 6 samples") for line in report.lines)
    assert any("depth:" in line and "valid" in line for line in report.lines)
    bad = str(tmp_path / "bad")
    write_layout(bad, "nyuv2", n_train=2, n_val=1)
    label = np.full((H, W), 20.0, "float32")
    np.save(os.path.join(bad, "val", "label", "0.npy"), label)
    os.remove(os.path.join(bad, "train", "normal", "1.npy"))
    report = check_dataset(bad, "nyuv2")
    assert any("val/label/0.npy: labels outside 0..12 (ignore = -1)" in p
               for p in report.problems)
    assert any("train/normal: indices differ" in p for p in report.problems)
    # What fit refuses before its first step, check reports too.
    assert any("train/normal has 1 files but image/ has 2" in p for p in report.problems)


def test_fit_and_check_refuse_the_same_files(tmp_path):
    """Gaps in indices (refused by fit up front) and bad values (refused as read)."""
    import tensorflow as tf

    from keras_sdmtcnn.data.check import check_dataset
    from keras_sdmtcnn.data.values import bad_file

    root = str(tmp_path / "gap")
    write_layout(root, "nyuv2", n_train=3, n_val=2)
    for folder in ("image", "label", "depth", "normal"):
        os.rename(f"{root}/val/{folder}/1.npy", f"{root}/val/{folder}/2.npy")
    with pytest.raises(UserError, match=r"misses index files \[1\]"):
        mtan_dataset(root, "val", "nyuv2", ["depth"], (H, W), 2)
    assert any("misses index files [1]" in p for p in check_dataset(root, "nyuv2").problems)

    for name, array, rule in (
            ("depth", np.full((H, W, 1), np.nan, "float32"), "holds NaN or Inf"),
            ("label", np.full((H, W), 13.0, "float32"), "labels outside 0..12 (ignore = -1)"),
            ("normal", np.full((H, W, 3), 0.3, "float32"), "normals are neither unit vectors")):
        root = str(tmp_path / name)
        write_layout(root, "nyuv2", n_train=3, n_val=1)
        path = f"{root}/train/{name}/2.npy"
        np.save(path, array)
        assert [p for p in check_dataset(root, "nyuv2").problems if p.startswith(path)] == [
            f"{path}: {rule}" if name != "normal" else
            f"{path}: normals are neither unit vectors nor all-zero"]
        ds, _, _ = mtan_dataset(root, "train", "nyuv2", ["semantic", "depth", "normal"],
                                (H, W), 3)
        with pytest.raises(tf.errors.InvalidArgumentError) as caught:
            next(iter(ds))
        assert bad_file(caught.value.message) == (path, rule if name != "normal" else
                                                  "normals are neither unit vectors nor all-zero")


def test_a_small_validation_split_is_decoded_once_into_the_same_batches(
        nyuv2, tmp_path, monkeypatch):
    import shutil

    from keras_sdmtcnn.data import pipeline
    from keras_sdmtcnn.data.mtan import mtan_source

    def batches(ds):
        return [(x.numpy(), y["semantic"].numpy(), y["depth"].numpy()) for x, y in ds]

    def assert_same(a, b):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            for p, q in zip(u, v):
                np.testing.assert_array_equal(p, q)

    root = str(tmp_path / "copy")
    shutil.copytree(nyuv2[0], root)
    paths, decode, n, _ = mtan_source(root, "val", "nyuv2", ["semantic", "depth"], (H, W))
    from_files = batches(pipeline.eval_pipeline(paths, decode, 2))
    assert [len(b[0]) for b in from_files] == [2, 1]  # 3 samples, the last batch smaller
    kept = pipeline.eval_pipeline(paths, decode, 2, in_memory=True)
    limit = pipeline.IN_MEMORY_LIMIT_MB
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT_MB", 0)
    over = pipeline.eval_pipeline(paths, decode, 2, in_memory=True)  # over the limit
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT_MB", limit)
    assert_same(batches(over), from_files)
    shutil.rmtree(root)  # a pass now reads memory, or fails
    for _ in range(2):  # two epochs' validation
        assert_same(batches(kept), from_files)
    with pytest.raises(Exception, match="No such file|NotFound|not found"):
        batches(over)
