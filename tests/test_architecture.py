"""The house rules: import directions (import-linter contracts), no cycles, a light config.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); the
README's layout tour explains them.
"""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

PACKAGE = os.path.join(REPO, "keras_sdmtcnn")


def lint_imports(root):
    """Runs import-linter on the package under ``root``; returns (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = ("import sys; from importlinter.cli import lint_imports_command; "
           "sys.exit(lint_imports_command())")
    done = subprocess.run([sys.executable, "-c", run, "--no-cache", "--config",
                           os.path.join(str(root), "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _lint_imports_module_available():
    try:
        import importlinter.cli  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A copy of the package and its contracts, to plant forbidden imports in."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(PACKAGE, root / "keras_sdmtcnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pyproject.toml"), root / "pyproject.toml")
    return root


def test_import_contracts_hold():
    assert _lint_imports_module_available(), "import-linter is a test dependency"
    code, output = lint_imports(REPO)
    assert code == 0, output
    assert "0 broken" in output


@pytest.mark.parametrize("module,line,contract", [
    ("training/metrics.py", "from keras_sdmtcnn.evaluate import load_run",
     "The library imports no command"),
    ("data/pipeline.py", "from keras_sdmtcnn.models.sdmtcnn import SDMTCNN",
     "Data knows no model"),
    ("models/layers.py", "from keras_sdmtcnn.tasks import TASKS", "know no task"),
    ("config/schema.py", "import tensorflow", "import no TensorFlow"),
    ("runs/rundir.py", "from keras_sdmtcnn.workflows import train", "layered"),
])
def test_a_planted_forbidden_import_breaks_a_contract(planted, module, line, contract):
    path = planted / "keras_sdmtcnn" / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # planted by the test\n")
        code, output = lint_imports(str(planted))
    finally:
        path.write_text(original)
    assert code != 0
    assert "Broken contracts" in output, output
    assert contract in output.split("Broken contracts", 1)[1], output


def test_no_import_cycles():
    import grimp

    graph = grimp.build_graph("keras_sdmtcnn", cache_dir=None)
    modules = sorted(graph.modules)
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == "open":
                cycle = stack[stack.index(imported):] + [imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in modules:
        if module not in state:
            visit(module)


def test_a_recipe_error_is_reported_without_importing_tensorflow(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("training:\n  epohcs: 3\n")
    probe = (
        "import sys\n"
        "from keras_sdmtcnn import fit\n"
        "try:\n"
        f"    fit.main([{str(recipe)!r}])\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert "UserError" in done.stdout and "Did you mean training.epochs?" in done.stdout
    assert "tensorflow loaded: False False" in done.stdout, done.stdout + done.stderr


def test_the_console_script_names_every_command():
    from keras_sdmtcnn.cli import COMMANDS

    done = subprocess.run([sys.executable, "-m", "keras_sdmtcnn", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr
    for name in ("fit", "evaluate", "export", "predict", "bench", "experiments", "data"):
        assert name in COMMANDS and name in done.stdout
