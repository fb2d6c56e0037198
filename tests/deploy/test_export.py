"""Export of a tiny trained run: every format and quantisation, parity, runtimes, predict."""

import json
import os

import numpy as np
import pytest
from conftest import run_command
from PIL import Image

from keras_sdmtcnn.deploy.parity import failures
from keras_sdmtcnn.deploy.runtime import load_exported
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.workflows.export import export, export_variants

FILES = {"tflite": "model.tflite", "onnx": "model.onnx", "saved_model": "saved_model"}


@pytest.fixture(scope="module")
def exports(finished_run, tmp_path_factory):
    _, run_dir, _ = finished_run
    out = tmp_path_factory.mktemp("exports")
    variants = [("saved_model", "none"), ("tflite", "none"), ("onnx", "none"),
                ("tflite", "fp16"), ("tflite", "dynamic_int8"), ("tflite", "int8")]
    folders = export_variants(str(run_dir), "student", variants, str(out), parity_samples=4,
                              calibration_samples=8, verbose=0)
    made = dict(zip(variants, folders))
    made[("tflite-teacher", "none")] = export(str(run_dir), "teacher", "tflite", "none",
                                              str(out), parity_samples=4, verbose=0)
    return out, made


def _meta(folder):
    with open(os.path.join(folder, "metadata.json")) as f:
        return json.load(f)


def test_every_export_runs_and_matches_its_metadata(exports):
    out, made = exports
    # One folder per variant; the SavedModel they share is not left behind.
    assert sorted(os.listdir(out)) == sorted(os.path.basename(f) for f in made.values())
    for (fmt, quantize), folder in made.items():
        fmt = fmt.split("-")[0]
        meta = _meta(folder)
        assert meta["format"] == fmt and meta["quantize"] == quantize
        runtime = load_exported(os.path.join(folder, FILES[fmt]))
        image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype("uint8")
        assert meta["input"] == {**meta["input"], "name": "image", "shape": [1, 32, 32, 3],
                                 "dtype": "uint8"}
        out = runtime(image)
        assert [o["name"] for o in meta["outputs"]] == [
            "semantic_logits", "semantic_classes", "depth", "normal"]
        for spec in meta["outputs"]:
            assert list(out[spec["name"]].shape) == spec["shape"], (folder, spec)
            assert str(out[spec["name"]].dtype) == spec["dtype"], (folder, spec)
        assert meta["recipe"]["data"]["image_size"] == [32, 32]


def test_tflite_exports_are_builtins_only(exports):
    _, made = exports
    for (fmt, quantize), folder in made.items():
        if fmt.startswith("tflite"):
            ops = _meta(folder)["tflite_ops"]
            assert "CONV_2D" in ops
            assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    assert "QUANTIZE" in _meta(made[("tflite", "int8")])["tflite_ops"]


def test_float_exports_hold_the_parity_thresholds(exports):
    _, made = exports
    for key in (("saved_model", "none"), ("tflite", "none"), ("onnx", "none"),
                ("tflite-teacher", "none")):
        parity = _meta(made[key])["parity"]
        assert parity["samples"] == 4
        assert failures(parity) == [], (key, parity)
        assert parity["class_agreement"] >= 0.999, (key, parity)
    for key in (("tflite", "fp16"), ("tflite", "dynamic_int8"), ("tflite", "int8")):
        parity = _meta(made[key])["parity"]  # reported, not enforced
        assert set(parity["max_abs_diff"]) == {"semantic_logits", "depth", "normal"}
        assert 0 <= parity["class_agreement"] <= 1


def test_litert_interpreter_runs_the_tflite_file(exports):
    from ai_edge_litert.interpreter import Interpreter

    _, made = exports
    interpreter = Interpreter(model_path=os.path.join(made[("tflite", "none")], "model.tflite"))
    runner = interpreter.get_signature_runner()
    out = runner(image=np.zeros((1, 32, 32, 3), np.uint8))
    assert out["depth"].shape == (1, 32, 32, 1)


def test_evaluate_an_exported_file_matches_the_keras_student(exports, finished_run, tmp_path):
    from keras_sdmtcnn.workflows.evaluate import evaluate, load_run

    _, run_dir, _ = finished_run
    folder = export(str(run_dir), "student", "tflite", "none", str(tmp_path),
                    input_dtype="float32", parity_samples=2, verbose=0)
    results = evaluate(os.path.join(folder, "model.tflite"), verbose=0)
    model, _, datasets = load_run(str(run_dir))
    keras_results = model.evaluate(datasets["val"], return_dict=True, verbose=0)
    for key in ("depth_student_abs_err", "semantic_student_miou", "normal_student_angle_mean"):
        np.testing.assert_allclose(results[key], keras_results[key], rtol=1e-3)
    assert os.path.exists(os.path.join(folder, "evaluation.md"))


def test_predict_writes_panels_of_the_right_size(exports, finished_run, tmp_path):
    from keras_sdmtcnn.runs.pictures import CAPTION
    from keras_sdmtcnn.workflows.predict import predict

    _, run_dir, _ = finished_run
    _, made = exports
    rgb = np.random.default_rng(0).integers(0, 256, (48, 40, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.jpg")  # grey, other size: converted
    both = predict(str(run_dir), [str(tmp_path)], str(tmp_path / "keras"), verbose=0)
    one = predict(os.path.join(made[("onnx", "none")], "model.onnx"), [str(tmp_path / "a.png")],
                  str(tmp_path / "onnx"), verbose=0)
    tile = 32 * 4  # 32x32 inputs are enlarged 4x
    columns = 1 + 3  # input, semantic, depth, normal
    with Image.open(both[0]) as image:
        assert image.size == (columns * tile, 2 * (tile + CAPTION))  # Teacher and Student
    with Image.open(one[0]) as image:
        assert image.size == (columns * tile, tile + CAPTION)
    assert [os.path.basename(p) for p in both] == ["a.png", "b.png"]


def test_export_bad_input_is_one_message_and_leaves_nothing(finished_run, tmp_path):
    _, run_dir, _ = finished_run
    out = tmp_path / "out"
    with pytest.raises(UserError, match="has no teacher branch"):
        export(str(run_dir / "student.keras"), "teacher", "tflite", "none", str(out),
               recipe_path=str(run_dir / "recipe.yaml"), verbose=0)
    assert not out.exists() or os.listdir(out) == []
    result = run_command("export", str(run_dir), "--format", "onnx", "--quantize", "int8",
                         "--out", str(out))
    assert result.returncode == 2
    assert "--quantize int8 is not supported for onnx" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or os.listdir(out) == []
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = run_command("predict", str(run_dir), str(tmp_path / "bad.png"), "--out",
                         str(tmp_path / "panels"))
    assert result.returncode == 2 and "Cannot read image" in result.stderr
    assert "Traceback" not in result.stderr
