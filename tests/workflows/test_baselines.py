import numpy as np

from keras_sdmtcnn.config import recipe_from_dict
from keras_sdmtcnn.data.datasets import build_datasets
from keras_sdmtcnn.data.taskonomy import numpy_targets
from keras_sdmtcnn.workflows.baselines import trivial_baselines


def test_trivial_baselines_match_numpy(tmp_path):
    recipe = recipe_from_dict({
        "data": {"tasks": ["semantic", "depth", "normal"], "image_size": [32, 48],
                 "scenes": {"num_train": 6, "num_val": 3, "height": 32, "width": 48,
                            "seed": 2, "cache_dir": str(tmp_path)}},
        "training": {"batch_size": 4},
    })
    got = trivial_baselines(recipe)
    datasets, _ = build_datasets(recipe, verbose=False, one_pass=True)
    _, train = numpy_targets(datasets["train"])
    _, val = numpy_targets(datasets["val"])
    labels = train["semantic"][train["semantic"] > 0]
    majority = np.bincount(labels).argmax()
    v = val["semantic"][val["semantic"] > 0]
    np.testing.assert_allclose(got["semantic_trivial_pixel_acc"], (v == majority).mean(), rtol=1e-9)
    mean_depth = train["depth"][train["depth"] > 0].mean()
    d = val["depth"][val["depth"] > 0]
    np.testing.assert_allclose(got["depth_trivial_abs_err"], np.abs(d - mean_depth).mean(), rtol=1e-5)
    n = train["normal"][np.any(train["normal"] != 0, -1)].sum(0)
    n /= np.linalg.norm(n)
    g = val["normal"][np.any(val["normal"] != 0, -1)]
    cos = np.clip((g @ n) / np.linalg.norm(g, axis=-1), -1, 1)
    np.testing.assert_allclose(got["normal_trivial_angle_mean"],
                               np.degrees(np.arccos(cos)).mean(), rtol=1e-5)
