"""What a lab checks before depending on the package: version, licence, citation, changes."""

import os
import re
from importlib.metadata import version

from conftest import REPO

import keras_sdmtcnn


def _read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def test_the_version_has_one_source():
    assert version("keras_sdmtcnn") == keras_sdmtcnn.__version__
    pyproject = _read("pyproject.toml")
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "keras_sdmtcnn.__version__"}' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.MULTILINE)
    assert not os.path.exists(os.path.join(REPO, "setup.py"))
    assert f"## {keras_sdmtcnn.__version__} (" in _read("CHANGELOG.md")
    assert f"version: {keras_sdmtcnn.__version__}" in _read("CITATION.cff")


def test_licence_and_citation():
    assert "Apache License" in _read("LICENSE") and "Version 2.0" in _read("LICENSE")
    citation = _read("CITATION.cff")
    assert "SD-MTCNN: Self-Distilled Multi-Task CNN" in citation and "license: Apache-2.0" in (
        citation)


def test_the_readme_is_short_and_quotes_figures_from_the_docs():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 150
    # The demo's figures come from docs/usage.md's table (one set of runs).
    start = readme.index("## Quick start")
    quick = readme[start:readme.index("```", start)]
    figures = re.findall(r"\d+\.\d+", quick)
    assert len(figures) >= 6, figures
    usage = _read("docs/usage.md")
    table = usage[usage.index("# What the demo reaches"):]
    for figure in figures:
        assert figure in table, figure
    # Speed-ups quoted in the README come from docs/benchmarks.md.
    benchmarks = _read("docs/benchmarks.md")
    for ratio in re.findall(r"\d+(?:\.\d+)?-\d+(?:\.\d+)?x", readme):
        assert ratio in benchmarks, ratio
