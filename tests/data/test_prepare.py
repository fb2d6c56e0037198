"""``data prepare``: tiny fake downloads in the official raw formats, checked value by value.

Every expected value is computed here from the raw arrays with the rules the
docs state (nearest = the input pixel under the output pixel's centre, which
for a factor of 2 is ``[1::2, 1::2]``), not by calling the preparation code.
"""

import json
import os

import numpy as np
import pytest
from fake_data import (
    CAMERA,
    CITYSCAPES_IDS,
    plane_depth,
    write_cityscapes_raw,
    write_nyuv2_raw,
    write_sample,
)
from PIL import Image

from keras_sdmtcnn.data.prepare import prepare_dataset
from keras_sdmtcnn.data.prepare.nyuv2 import KINECT, normals_from_depth
from keras_sdmtcnn.data.prepare.output import PARTIAL_FILE, PREPARE_FILE, read_record
from keras_sdmtcnn.errors import UserError


def _bilinear_unit(rgb, size):
    h, w = size
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), np.float32) / 255


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("cs_raw"))
    return raw, write_cityscapes_raw(raw)


def test_cityscapes_labels_disparity_and_metres_value_by_value(cityscapes, tmp_path):
    raw, written = cityscapes
    table7 = {i: c for i, c, _ in CITYSCAPES_IDS}
    table19 = {i: c for i, _, c in CITYSCAPES_IDS}
    out = str(tmp_path / "cs")
    record, count = prepare_dataset("cityscapes", raw, out, size=(8, 16))
    assert count == 3 and record["splits"] == {"train": 2, "val": 1}
    metres = str(tmp_path / "cs_m")
    prepare_dataset("cityscapes", raw, metres, size=(8, 16), depth_units="metres")
    for split, stems in record["samples"].items():
        for index, stem in enumerate(stems):
            rgb, ids, p = written[(split, stem)]
            load = lambda root, folder: np.load(f"{root}/{split}/{folder}/{index}.npy")  # noqa
            centre = (slice(1, None, 2), slice(1, None, 2))
            np.testing.assert_array_equal(load(out, "label_7"),
                                          np.vectorize(table7.get)(ids[centre]))
            np.testing.assert_array_equal(load(out, "label_19"),
                                          np.vectorize(table19.get)(ids[centre]))
            q = p[centre].astype(np.float64)
            disparity = np.where(q > 1, (q - 1) / 256, 0)  # pixels at 16x32
            np.testing.assert_allclose(load(out, "depth")[..., 0], disparity / 2, rtol=1e-6)
            baseline, fx = CAMERA["extrinsic"]["baseline"], CAMERA["intrinsic"]["fx"]
            expected_m = np.where(q > 1, baseline * fx / np.maximum(disparity, 1e-9), 0)
            np.testing.assert_allclose(load(metres, "depth")[..., 0], expected_m, rtol=1e-5)
            np.testing.assert_array_equal(load(out, "image"), _bilinear_unit(rgb, (8, 16)))
            assert np.all(load(out, "depth")[:1] == 0)  # rows of p = 0 and p = 1: invalid
    saved = json.load(open(os.path.join(out, PREPARE_FILE)))
    assert saved["conventions"]["depth_units"] == "disparity_px"
    assert saved["mappings"]["label_7"]["26"] == 6 and saved["mappings"]["label_19"]["9"] == -1
    assert json.load(open(os.path.join(metres, PREPARE_FILE)))["conventions"][
        "depth_units"] == "metres"


def test_the_reader_keeps_prepared_disparity_in_pixels_of_the_size_it_reads(cityscapes, tmp_path):
    from keras_sdmtcnn.data.augment import scale_crop
    from keras_sdmtcnn.data.mtan import mtan_dataset
    from keras_sdmtcnn.data.taskonomy import numpy_targets

    raw, _ = cityscapes
    out = str(tmp_path / "cs")
    prepare_dataset("cityscapes", raw, out, size=(8, 16))
    stored = np.load(f"{out}/train/depth/0.npy")
    ds, _, source = mtan_dataset(out, "train", "cityscapes", ["semantic", "depth"], (16, 32), 2)
    assert source.depth_units == "disparity_px" and source.folders["semantic"] == "label_7"
    _, y = numpy_targets(ds)
    # Read at twice the width: nearest up-sampling, disparities doubled.
    np.testing.assert_allclose(y["depth"][0, ::2, ::2], stored * 2, rtol=1e-6)
    # A zoom by s multiplies disparity by s (depth in metres would be divided).
    image = np.zeros((8, 16, 3), np.float32)
    _, zoomed = scale_crop(image, {"depth": np.full((8, 16, 1), 3.0, np.float32)}, 2.0, 0, 0,
                           depth_zoom="multiply")
    np.testing.assert_allclose(zoomed["depth"], 6.0)


def test_nyuv2_from_the_labelled_mat_value_by_value(tmp_path):
    raw = str(tmp_path / "nyu_raw")
    rgb, depth, labels, map40, map13 = write_nyuv2_raw(raw)
    out = str(tmp_path / "nyu")
    record, count = prepare_dataset("nyuv2", raw, out, size=(12, 16))
    assert count == 3 and record["samples"] == {"train": ["1", "3"], "val": ["2"]}
    centre = (slice(1, None, 2), slice(1, None, 2))
    for split, k, index in (("train", 0, 0), ("train", 2, 1), ("val", 1, 0)):
        load = lambda folder: np.load(f"{out}/{split}/{folder}/{index}.npy")  # noqa: E731
        raw_label = labels[k][centre].astype(np.int64)
        expected = np.where(raw_label == 0, -1, map13[map40[np.maximum(raw_label, 1) - 1] - 1] - 1)
        np.testing.assert_array_equal(load("label"), expected)
        np.testing.assert_allclose(load("depth")[..., 0], depth[k][centre], rtol=1e-6)
        np.testing.assert_array_equal(load("image"), _bilinear_unit(rgb[k], (12, 16)))
        normal = load("normal")
        norms = np.linalg.norm(normal, axis=-1)
        assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
        assert np.all(norms[load("depth")[..., 0] == 0] == 0)
    assert load("label").min() >= -1 and load("label").max() <= 12


def test_normals_of_a_tilted_floor_are_the_planes_within_one_degree():
    normal = np.array([0.15, -1.0, -0.25])
    normal /= np.linalg.norm(normal)
    depth = plane_depth((480, 640), normal, 1.4, KINECT)
    computed = normals_from_depth(depth)
    inner = np.zeros(depth.shape, bool)
    inner[3:-3, 3:-3] = True
    valid = depth > 0
    # Away from the border of the image and of the floor (the window's half width).
    from scipy.ndimage import binary_erosion

    inner &= binary_erosion(valid, np.ones((7, 7)))
    assert inner.sum() > 100_000
    angles = np.degrees(np.arccos(np.clip(computed[inner] @ normal, -1, 1)))
    assert angles.max() < 1.0
    assert np.all(computed[~valid] == 0)


def test_taskonomy_split_files_from_the_official_csv(tmp_path):
    raw = tmp_path / "tk"
    for building in ("b1", "b2", "b3", "b4"):
        for point in range(2):
            write_sample(raw, building, point)
    csv = tmp_path / "train_val_test_tiny.csv"
    csv.write_text("id,train,val,test\nb1,1,0,0\nb2,1,0,0\nb3,0,1,0\nb4,0,0,1\nb5,0,0,0\n")
    out = str(tmp_path / "splits")
    record, _ = prepare_dataset("taskonomy", str(raw), out, splits_csv=str(csv))
    assert open(f"{out}/train.txt").read() == "b1\nb2\n"
    assert open(f"{out}/val.txt").read() == "b3\n" and open(f"{out}/test.txt").read() == "b4\n"
    assert record["splits"]["train"] == {"buildings": 2, "points": 4}
    os.remove(raw / "normal" / "b3" / "point_1_view_0_domain_normal.png")
    with pytest.raises(UserError, match=r"normal/b3 does not hold the points"):
        prepare_dataset("taskonomy", str(raw), str(tmp_path / "again"), splits_csv=str(csv))
    assert not os.path.exists(tmp_path / "again" / PREPARE_FILE)


def test_a_killed_preparation_resumes_and_is_never_read_as_complete(cityscapes, tmp_path):
    raw, _ = cityscapes
    out = str(tmp_path / "cs")
    prepare_dataset("cityscapes", raw, out, size=(8, 16))
    first = np.load(f"{out}/train/depth/1.npy")
    # As a kill leaves it: the partial marker, one sample missing, a temporary file.
    settings = json.load(open(os.path.join(out, PREPARE_FILE)))["settings"]
    os.remove(os.path.join(out, PREPARE_FILE))
    json.dump({"settings": settings}, open(os.path.join(out, PARTIAL_FILE), "w"))
    os.remove(f"{out}/train/depth/1.npy")
    open(f"{out}/train/depth/.1.npy.x1.tmp.npy", "wb").write(b"half")
    with pytest.raises(UserError, match="unfinished `data prepare`"):
        read_record(out)
    _, written = prepare_dataset("cityscapes", raw, out, size=(8, 16))
    assert written == 1
    np.testing.assert_array_equal(np.load(f"{out}/train/depth/1.npy"), first)
    assert not [n for n in os.listdir(f"{out}/train/depth") if ".tmp" in n]
    assert read_record(out)["splits"] == {"train": 2, "val": 1}
    with pytest.raises(UserError, match=r"size: \[8, 16\] then, \[16, 32\] now"):
        prepare_dataset("cityscapes", raw, out, size=(16, 32))


def _nyuv2_raw_without(tmp, what):
    raw = tmp / "nyu_raw"
    write_nyuv2_raw(str(raw))
    if what == "not hdf5":
        (raw / "nyu_depth_v2_labeled.mat").write_text("MATLAB 5.0 MAT-file, not HDF5")
    elif what == "no labels key":
        import h5py

        with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
            del f["labels"]
    elif what == "short mapping":
        from scipy.io import savemat

        savemat(raw / "classMapping40.mat", {"mapClass": np.ones((1, 893))})
    return raw


def _cityscapes_raw_without(tmp, what):
    import shutil

    raw = tmp / "cs_raw"
    write_cityscapes_raw(str(raw))
    if what == "no archive":
        shutil.rmtree(raw / "leftImg8bit")
    elif what == "unpaired":
        os.remove(raw / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png")
    return raw


BAD_PREPARES = {
    "missing archive folder": ("cityscapes", lambda t: _cityscapes_raw_without(t, "no archive"),
                               "leftImg8bit"),
    "labels that do not pair with images": (
        "cityscapes", lambda t: _cityscapes_raw_without(t, "unpaired"), "do not pair up"),
    "a .mat that is not HDF5": ("nyuv2", lambda t: _nyuv2_raw_without(t, "not hdf5"),
                                "is not an HDF5"),
    "a .mat without labels": ("nyuv2", lambda t: _nyuv2_raw_without(t, "no labels key"),
                              "lacks labels"),
    "a mapping of the wrong length": ("nyuv2", lambda t: _nyuv2_raw_without(t, "short mapping"),
                                      "893 entries, 894 expected"),
    "an output folder holding something else": (
        "nyuv2", lambda t: _nyuv2_raw_without(t, None), "already holds other files"),
}


@pytest.mark.parametrize("kind", sorted(BAD_PREPARES))
def test_each_bad_download_is_one_error_line_and_nothing_looks_complete(kind, tmp_path):
    from conftest import run_command

    fmt, make, message = BAD_PREPARES[kind]
    raw = make(tmp_path)
    out = tmp_path / "out"
    if kind == "an output folder holding something else":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    result = run_command("data", "prepare", fmt, str(raw), str(out), "--size", "8", "16")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (out / PREPARE_FILE).exists()
    if out.exists() and kind == "an output folder holding something else":
        assert sorted(os.listdir(out)) == ["notes.txt"]


def test_a_missing_optional_package_names_the_extra_to_install(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    shadow = tmp_path / "shadow" / "h5py"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('h5py is not installed here')\n")
    raw = tmp_path / "raw"
    write_nyuv2_raw(str(raw))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}:{REPO}"}
    result = subprocess.run([sys.executable, "-m", "keras_sdmtcnn.data", "prepare", "nyuv2",
                             str(raw), str(tmp_path / "out")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: Reading nyu_depth_v2_labeled.mat needs the Python package 'h5py', which is not "
        'installed: pip install -e ".[prepare]" (from the repository root)']
    assert not (tmp_path / "out").exists()


TINY_MODEL = ("model: {width_multiplier: 0.0625, bottleneck_filters: 64}\n"
              "output: {tensorboard: false}\n")


def _fit(tmp_path, data, training="{epochs: 1, batch_size: 2}"):
    from conftest import run_command

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {data}\n{TINY_MODEL}training: {training}\n")
    run_dir = tmp_path / "run"
    result = run_command("fit", str(recipe), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    return result, json.loads((run_dir / "metrics.json").read_text())


def test_fit_trains_on_nyuv2_prepared_from_the_official_files(tmp_path):
    from conftest import run_command

    raw = str(tmp_path / "nyu_raw")
    write_nyuv2_raw(raw, size=(32, 64), n=8, train=(1, 2, 3, 4, 5, 6), test=(7, 8))
    root = str(tmp_path / "nyu")
    prepared = run_command("data", "prepare", "nyuv2", raw, root, "--size", "16", "32")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert "train 6, val 2 samples" in prepared.stdout
    assert "OK: no problem found." in prepared.stdout
    result, history = _fit(
        tmp_path, f"{{format: nyuv2, root: {root}, tasks: [semantic, depth, normal], "
                  "image_size: [16, 32], augment: true, val_source: holdout, "
                  "holdout_fraction: 0.34}", "{epochs: 2, batch_size: 2, seed: 7}")
    assert "labels from label/" in result.stdout
    assert len(history) == 2 and "val_normal_teacher_angle_mean" in history[-1]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == 7


# Opt-in (-m slow, 16 s): the prepared CityScapes files are checked value by value
# and read back above; fit on prepared NYUv2 and Taskonomy stays in the default suite.
@pytest.mark.slow
def test_fit_trains_on_cityscapes_prepared_from_the_official_archives(tmp_path):
    from conftest import run_command

    raw = str(tmp_path / "cs_raw")
    write_cityscapes_raw(raw, size=(32, 64))
    root = str(tmp_path / "cs")
    prepared = run_command("data", "prepare", "cityscapes", raw, root, "--size", "16", "32")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert "depth in disparity_px" in prepared.stdout and "OK: no problem found." in prepared.stdout
    result, history = _fit(tmp_path, f"{{format: cityscapes, root: {root}, "
                                     "tasks: [semantic, depth], image_size: [16, 32]}")
    assert "labels from label_7/" in result.stdout
    assert np.isfinite(history[-1]["val_depth_student_abs_err"])


def test_fit_trains_on_taskonomy_splits_written_from_the_official_csv(tmp_path):
    from conftest import run_command

    raw = tmp_path / "tk"
    for building, points in (("b1", 2), ("b2", 2), ("b3", 2)):
        for point in range(points):
            write_sample(raw, building, point)
    csv = tmp_path / "split.csv"
    csv.write_text("id,train,val,test\nb1,1,0,0\nb2,1,0,0\nb3,0,1,0\n")
    out = tmp_path / "splits"
    prepared = run_command("data", "prepare", "taskonomy", str(raw), str(out),
                           "--splits-csv", str(csv), "--tasks", "semantic", "depth")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert f"data.train_split: {out}/train.txt" in prepared.stdout
    _, history = _fit(tmp_path, f"{{format: taskonomy, root: {raw}, tasks: [semantic, depth], "
                                f"image_size: [16, 16], train_split: {out}/train.txt, "
                                f"val_split: {out}/val.txt}}")
    assert len(history) == 1


def test_nyuv2_splits_that_share_an_image_are_refused_naming_it(tmp_path):
    from keras_sdmtcnn.data.prepare.nyuv2 import split_indices

    raw = tmp_path / "nyu_raw"
    write_nyuv2_raw(str(raw), train=(1, 3), test=(3, 2))
    with pytest.raises(UserError, match=r"1 image\(s\) are in both trainNdxs and testNdxs "
                                        r"\(1-based: 3\)"):
        split_indices(str(raw))
    out = tmp_path / "out"
    from conftest import run_command

    result = run_command("data", "prepare", "nyuv2", str(raw), str(out), "--size", "8", "16")
    assert result.returncode == 2 and "in both trainNdxs and testNdxs" in result.stderr
    assert not (out / PREPARE_FILE).exists()
