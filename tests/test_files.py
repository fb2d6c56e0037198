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
