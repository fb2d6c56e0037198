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


def test_compiled_model_runs_the_student_with_the_interpreters_parity(exports, finished_run):
    # LiteRT 2.x's CompiledModel (what Android apps use) on the CPU, against
    # the trained Keras Student on the run's validation images: the export's
    # own parity rule (float32 within 1e-4 of the output scale; 99.9% of the
    # pixels the same class).
    import tensorflow as tf

    from keras_sdmtcnn.data.preprocessing import to_raw_pixels
    from keras_sdmtcnn.deploy.parity import parity
    from keras_sdmtcnn.deploy.serving import serving_function
    from keras_sdmtcnn.workflows.notebook import load_run

    _, made = exports
    _, run_dir, _ = finished_run
    compiled = load_exported(os.path.join(made[("tflite", "none")], "model.tflite"),
                             runtime="compiled_model")
    assert compiled.runtime == "compiled_model"
    model, recipe, datasets = load_run(str(run_dir))
    serve, spec, tasks = serving_function(model, "student", (32, 32), "uint8",
                                          recipe.data.image_normalization)
    serve = tf.function(serve, input_signature=[spec])
    images = next(iter(datasets["val"]))[0].numpy()[:4]
    raw = [to_raw_pixels(x, recipe.data.image_normalization, "uint8") for x in images]
    report = parity(compiled, serve, raw, tasks)
    assert failures(report) == [], report
    assert report["class_agreement"] >= 0.999, report


def test_the_gpu_verdict_comes_from_litert_s_analyzer_and_names_offending_ops(
        exports, monkeypatch, capsys, tmp_path):
    from keras_sdmtcnn.deploy import tflite

    _, made = exports
    gpu = _meta(made[("tflite", "none")])["gpu_compatibility"]
    assert gpu["compatible"] is True and gpu["incompatible_ops"] == []
    assert gpu["analyzer"].startswith("LiteRT model analyzer (ai-edge-litert ")
    # The analyzer marks each op its GPU delegate lacks on the op's line. (The
    # analyzer of ai-edge-litert 2.3.0 passes every op we could put in a
    # builtins-only file, CUMSUM, TOPK_V2 and GATHER_ND among them, so the
    # report of an incompatible model is given here in its documented form.)
    report = ("  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#3]\n"
              "  Op#1 CUMSUM(T#3, T#4) -> [T#5]GPU COMPATIBILITY WARNING: Not supported op "
              "CUMSUM\n\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate "
              "compatibility issues at nodes 1 with TFLite runtime version 2.22.0\n")
    verdict = tflite.parse_gpu_report(report)
    assert verdict["compatible"] is False
    assert verdict["incompatible_ops"] == [{"op": "CUMSUM", "reason": "Not supported op CUMSUM"}]
    monkeypatch.setattr(tflite, "gpu_compatibility", lambda flat: verdict)
    from keras_sdmtcnn.workflows import export as export_workflow

    class Source:  # what _convert reads for a float32 .tflite
        calibration = None

        def saved_model(self):
            return os.path.join(made[("saved_model", "none")], "saved_model")

    _, extra = export_workflow._convert(Source(), "tflite", "none", str(tmp_path))
    assert extra["gpu_compatibility"] == verdict
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: LiteRT's analyzer finds ops")
    assert "CUMSUM (Not supported op CUMSUM)" in err[0]


def test_compiled_model_without_its_wheel_is_one_error_naming_the_version(exports, monkeypatch):
    import sys

    _, made = exports
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)  # not installed
    with pytest.raises(UserError, match=r"needs LiteRT's CompiledModel API.*ai-edge-litert>=2\.0"):
        load_exported(os.path.join(made[("tflite", "none")], "model.tflite"),
                      runtime="compiled_model")
    with pytest.raises(UserError, match="--runtime compiled_model runs .tflite files"):
        load_exported(os.path.join(made[("onnx", "none")], "model.onnx"),
                      runtime="compiled_model")


def test_the_tflite_signature_is_what_docs_deploying_md_tells_apps(exports):
    # The Android code in docs/deploying.md reads these names.
    from ai_edge_litert.compiled_model import CompiledModel
    from conftest import REPO

    _, made = exports
    model = CompiledModel.from_file(os.path.join(made[("tflite", "none")], "model.tflite"))
    signatures = model.get_signature_list()
    assert list(signatures) == ["serving_default"]
    assert signatures["serving_default"]["inputs"] == ["image"]
    outputs = set(signatures["serving_default"]["outputs"])
    assert outputs == {"semantic_logits", "semantic_classes", "depth", "normal"}
    with open(os.path.join(REPO, "docs", "deploying.md"), encoding="utf-8") as f:
        guide = f.read()
    for name in ("serving_default", '"image"', *(f'"{o}"' for o in sorted(outputs))):
        assert name in guide, name


def test_evaluate_an_exported_file_matches_the_keras_student(exports, finished_run, tmp_path):
    from keras_sdmtcnn.workflows.evaluate import evaluate
    from keras_sdmtcnn.workflows.notebook import load_run

    _, run_dir, _ = finished_run
    folder = export(str(run_dir), "student", "tflite", "none", str(tmp_path),
                    input_dtype="float32", parity_samples=2, verbose=0)
    results = evaluate(os.path.join(folder, "model.tflite"), verbose=0)
    compiled = evaluate(os.path.join(folder, "model.tflite"), verbose=0,
                        runtime="compiled_model")
    assert compiled == pytest.approx(results, rel=1e-6)
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


def test_without_out_an_export_goes_to_saved_models_under_the_recipe_name(
        finished_run, tmp_path, monkeypatch):
    _, run_dir, _ = finished_run
    monkeypatch.chdir(tmp_path)
    folder = export(str(run_dir), "student", "saved_model", "none", parity_samples=1, verbose=0)
    name = _meta(folder)["recipe"]["name"]
    assert folder == os.path.join("saved_models", name, "student-saved_model")
    assert os.listdir(tmp_path / "saved_models") == [name]


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


def _garbled_copy(folder, target, file, how):
    """A copy of an export folder with ``file`` cut to half, or with bytes flipped."""
    import shutil

    shutil.copytree(folder, target)
    path = os.path.join(target, file)
    data = bytearray(open(path, "rb").read())
    if how == "cut":
        data = data[:len(data) // 2]
    else:
        for i in range(len(data) // 4, len(data) // 4 + 64):
            data[i] ^= 0xA5
    open(path, "wb").write(bytes(data))
    return target


@pytest.mark.parametrize("how", ["cut", "garbled"])
def test_exported_files_cut_short_or_garbled_are_one_error_naming_them(exports, tmp_path, how):
    _, made = exports
    cases = [(made[("tflite", "none")], "model.tflite", "model.tflite", "a tflite model"),
             (made[("onnx", "none")], "model.onnx", "model.onnx", "a onnx model"),
             (made[("saved_model", "none")], "saved_model/variables/variables.data-00000-of-00001",
              "saved_model", "a saved_model model"),
             (made[("tflite", "none")], "metadata.json", "model.tflite", "JSON")]
    for i, (folder, broken, opened, what) in enumerate(cases):
        copy = _garbled_copy(folder, str(tmp_path / f"copy{i}"), broken, how)
        try:
            load_exported(os.path.join(copy, opened))(
                np.zeros((1, 32, 32, 3), np.uint8))
        except UserError as e:
            message = str(e)
        else:  # a flipped byte in a weight may still load and run
            assert how == "garbled" and broken != "metadata.json", (broken, how)
            continue
        named = broken if broken.endswith(".json") else opened
        assert message.startswith(f"{os.path.join(copy, named)} is not valid {what}"), message
        assert "cut short or garbled: export it again" in message, message


def test_export_refuses_bad_samples_another_size_and_cleans_what_a_killed_export_left(
        finished_run, exports, tmp_path):
    _, run_dir, _ = finished_run
    out = tmp_path / "out"
    for samples in (0, -3):
        with pytest.raises(UserError, match=f"--samples must be a whole number >= 1.*got "
                                            f"{samples}"):
            export(str(run_dir), parity_samples=samples, out_dir=str(out), verbose=0)
    with pytest.raises(UserError, match=r"data.image_size is 64 x 64 \(height x width\), but "
                                        r".*was built for 32 x 32"):
        export(str(run_dir), overrides=["data.image_size=[64, 64]"], out_dir=str(out),
               verbose=0)
    from keras_sdmtcnn.workflows.evaluate import evaluate

    exported = os.path.join(exports[1][("tflite", "none")], "model.tflite")
    with pytest.raises(UserError, match=r"but .*model.tflite takes 32 x 32 images"):
        evaluate(exported, overrides=["data.image_size=[64, 64]"], verbose=0)
    # A killed export left a hidden folder (its writer gone): the next export removes
    # it, and nothing inside it is ever evaluated.
    out.mkdir(exist_ok=True)
    left = out / ".student-tflite.tmp-p99999999-000000.abc"  # another host's: kept
    import shutil

    from keras_sdmtcnn.io import owner_tag
    mine = out / f".student-tflite.tmp-p99999999-{owner_tag().split('-')[1]}.abc"
    for folder in (left, mine):
        shutil.copytree(exports[1][("tflite", "none")], folder)
    with pytest.raises(UserError, match="lies in a temporary folder of an export that did not "
                                        "finish"):
        evaluate(str(mine / "model.tflite"), verbose=0)
    export(str(run_dir), out_dir=str(out), parity_samples=1, verbose=0)
    assert not mine.exists() and left.exists()


def test_predict_gives_inputs_that_share_a_name_their_own_panels(exports, tmp_path):
    from keras_sdmtcnn.workflows.predict import predict

    _, made = exports
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    for name in ("photo.png", "photo.jpg", "other.png"):
        Image.fromarray(rgb).save(tmp_path / name)
    written = predict(os.path.join(made[("onnx", "none")], "model.onnx"), [str(tmp_path)],
                      str(tmp_path / "panels"), verbose=0)
    assert sorted(os.path.basename(p) for p in written) == [
        "other.png", "photo_jpg.png", "photo_png.png"]
    assert sorted(os.listdir(tmp_path / "panels")) == sorted(os.path.basename(p) for p in written)
    # A file name the file system refuses: one line naming it.
    result = run_command("predict", os.path.join(made[("onnx", "none")], "model.onnx"),
                         str(tmp_path / "photo.png"), "--out", str(tmp_path / ("x" * 300)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("File name too long. A name in that path is longer "
                                          "than the file system allows: choose a shorter one.")


def test_predict_turns_phone_photos_upright_and_refuses_decompression_bombs(tmp_path, capsys):
    from keras_sdmtcnn.workflows.predict import read_image

    upright = np.zeros((40, 20, 3), np.uint8)
    upright[:5] = 255  # white at the top when held upright
    sideways = Image.fromarray(np.rot90(upright, 1).copy())  # as the sensor stored it
    exif = sideways.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    sideways.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    pixels = read_image(str(tmp_path / "phone.jpg"), (40, 20))
    assert pixels[:5].mean() > 200 and pixels[-5:].mean() < 50
    assert "turned upright as its EXIF orientation (6) says" in capsys.readouterr().out
    Image.fromarray(upright).save(tmp_path / "big.png")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100  # the test image is over it (and over twice it)
    try:
        with pytest.raises(UserError, match="refused as a possible decompression bomb"):
            read_image(str(tmp_path / "big.png"), (40, 20))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
