"""Training and serving compute the same input from the same pixels (one preprocessing)."""

import numpy as np
import pytest
from fake_data import MTAN_SIZE, write_layout


@pytest.mark.parametrize("normalization", ["imagenet"])
def test_tflite_student_matches_the_trained_keras_student_on_raw_pixels(tmp_path, normalization):
    from keras_sdmtcnn.config import recipe_from_dict
    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.deploy.runtime import load_exported
    from keras_sdmtcnn.training.saving import load_model
    from keras_sdmtcnn.workflows.export import export
    from keras_sdmtcnn.workflows.train import fit

    root = tmp_path / "nyuv2"
    samples = write_layout(str(root), "nyuv2", n_train=4, n_val=2)
    for (split, i), sample in samples.items():  # images that are exactly 8-bit pixels / 255
        pixels = np.round(sample["image"] * 255).astype(np.uint8)
        np.save(root / split / "image" / f"{i}.npy", pixels.astype(np.float32) / 255.0)
        sample["pixels"] = pixels
    recipe = recipe_from_dict({
        "name": "imagenet_parity",
        "data": {"format": "nyuv2", "root": str(root), "image_size": list(MTAN_SIZE),
                 # Normals are left out: an untrained model's normal vectors are
                 # nearly zero before L2-normalisation, which magnifies float32
                 # rounding past 1e-4 (a trained model's are not).
                 "tasks": ["semantic", "depth"],
                 "image_normalization": normalization},
        "model": {"width_multiplier": 0.0625, "bottleneck_filters": 64},
        "training": {"epochs": 1, "batch_size": 2},
        "output": {"verbose": 0, "tensorboard": False},
    })
    _, _, run_dir = fit(recipe, str(tmp_path / "run"))
    folder = export(run_dir, "student", "tflite", out_dir=str(tmp_path / "exports"),
                    parity_samples=2, verbose=0)
    tflite = load_exported(f"{folder}/model.tflite")
    student = load_model(f"{run_dir}/student.keras")

    datasets, _ = build_datasets(recipe, verbose=False, splits=("val",))
    trained_on = np.concatenate([x.numpy() for x, _ in datasets["val"]])
    for i in range(2):
        raw = samples[("val", i)]["pixels"][None]
        # The reader standardised the images as the recipe asks (numpy, ImageNet statistics).
        expected = (raw[0] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        np.testing.assert_allclose(trained_on[i], expected, rtol=0, atol=1e-5)
        keras_out = student.predict(trained_on[i:i + 1], verbose=0)
        tflite_out = tflite(raw)
        for task in ("depth",):
            np.testing.assert_allclose(tflite_out[task], keras_out[f"{task}_student"],
                                       rtol=0, atol=1e-4, err_msg=task)
        np.testing.assert_allclose(tflite_out["semantic_logits"],
                                   keras_out["semantic_student"], rtol=0, atol=1e-4)
