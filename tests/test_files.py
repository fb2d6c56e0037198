"""Files and folders the library writes get the user's umask, not a private mode."""

import os
import stat

import pytest

from keras_sdmtcnn.io import atomic_write_text, temp_dir_beside


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_files_and_temporary_folders_follow_the_umask(tmp_path, umask_022):
    path = tmp_path / "out" / "metrics.json"
    atomic_write_text(str(path), "{}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    folder = temp_dir_beside(str(tmp_path / "exports"), ".x.tmp-")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755
    # Nothing is left beside the file but the file.
    assert os.listdir(path.parent) == ["metrics.json"]


def test_atomic_save_model_writes_what_keras_writes_with_its_skip_sets_cached(tmp_path, model3):
    # rundir.atomic_save_model stores Keras' attribute skip sets where Keras
    # looks them up (a Keras typo made every save rebuild them); the file
    # must hold the same config and the same weights as a plain model.save.
    import io
    import zipfile

    import h5py
    import numpy as np
    from keras.src.backend.common import global_state

    from keras_sdmtcnn.runs.rundir import atomic_save_model

    model3.save(str(tmp_path / "plain.keras"))
    atomic_save_model(model3, str(tmp_path / "atomic.keras"))
    assert global_state.get_global_attribute("saving_attr_skiplist_Layer", None)

    def contents(name):
        archive = zipfile.ZipFile(tmp_path / name)
        arrays = {}
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
            f.visititems(lambda key, obj: arrays.__setitem__(key, obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
        return archive.read("config.json"), arrays

    (plain_config, plain), (atomic_config, atomic) = contents("plain.keras"), contents(
        "atomic.keras")
    assert atomic_config == plain_config
    assert plain and sorted(atomic) == sorted(plain)
    assert all(np.array_equal(atomic[key], plain[key]) for key in plain)
