"""The example notebook runs on the suite's trained run; the Python API refuses bad input."""

import json
import os

import numpy as np
import pytest
from conftest import REPO

from keras_sdmtcnn.errors import UserError

NOTEBOOK = os.path.join(REPO, "docs", "notebooks", "quickstart.ipynb")


def test_the_notebook_is_stored_without_outputs():
    with open(NOTEBOOK, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


def test_the_notebook_runs_and_shows_the_table_panels_and_curves(finished_run, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    _, run_dir, _ = finished_run
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["SDMTCNN_RUN"] = str(run_dir)  # the kernel inherits it
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        del os.environ["SDMTCNN_RUN"]
    outputs = [o for c in notebook.cells if c["cell_type"] == "code" for o in c["outputs"]]
    markdown = [o["data"]["text/markdown"] for o in outputs
                if "text/markdown" in o.get("data", {})]
    assert any("Teacher" in m and "Student" in m and "mIoU" in m for m in markdown), markdown
    assert any("| metric | Keras | .tflite |" in m for m in markdown)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # two panels and the curves
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_load_run_and_its_predictions_refuse_what_they_cannot_use(finished_run, exports_dir):
    from keras_sdmtcnn import load_run

    _, run_dir, _ = finished_run
    with pytest.raises(UserError, match="^path: .* does not exist"):
        load_run(run_dir / "nowhere")
    with pytest.raises(UserError, match="^path: .* is an exported file, not a run"):
        load_run(exports_dir)
    run = load_run(run_dir)
    model, recipe, datasets = run  # unpacks as before
    assert model is run.model and "val" in datasets
    for bad, what in ((np.zeros((16, 16, 3), np.uint8), "(16, 16, 3)"),
                      (np.zeros((32, 32, 3), np.float32), "float32")):
        with pytest.raises(UserError, match="^images: expected uint8 RGB pixels") as e:
            run.predict(bad)
        assert what in str(e.value)
    (branch, outputs), *_ = run.predict(np.zeros((32, 32, 3), np.uint8))
    assert branch == "teacher" and outputs["depth"].shape == (1, 32, 32, 1)
    with pytest.raises(UserError, match="^split: 'train' was not loaded"):
        run.evaluate("train")


@pytest.fixture
def exports_dir(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not read")
    return path
