"""Trained runs used as frozen teachers: finding and checking them.

Two methods distil from a run trained earlier with this library:

- traditional two-stage distillation (the paper's Baseline-3) and KDAM from
  a separately trained teacher: ``objective.frozen_teacher: RUN_DIR``, a
  multi-task run on the same tasks and input size;
- Li & Bilen's feature distillation: ``objective.feature_teachers: {task:
  RUN_DIR}``, single-task runs, one per task, at the same input size.

Every check here runs before any training starts and names the recipe key,
the run directory and what to do. Loading the teachers' weights is the
models' business (``models/builders.py``).
"""

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir


def teacher_run_info(run_dir, key):
    """``(recipe dict, model.keras path)`` of a finished run, or a clear error."""
    return RunDir(run_dir).finished(key)


def finished_run_recipe(run_dir, key):
    """The recipe (as a dict) of a finished run, or a clear error."""
    return teacher_run_info(run_dir, key)[0]


def check_frozen_teacher(recipe, run_dir, lookup=finished_run_recipe):
    """The multi-task teacher run must have this recipe's tasks and input size.

    ``lookup(run_dir, key)`` gives the teacher's recipe as a dict (default:
    from a finished run on disk; the experiment runner also knows the runs
    its plan will train first).
    """
    key = "objective.frozen_teacher"
    values = lookup(run_dir, key)
    _same(key, run_dir, "data.tasks", values["data"]["tasks"], list(recipe.data.tasks))
    _same(key, run_dir, "data.image_size", values["data"]["image_size"],
          list(recipe.data.image_size))
    return values


def check_feature_teachers(recipe, lookup=finished_run_recipe):
    """Each single-task teacher: a finished run on exactly its task, at this input size."""
    key = "objective.feature_teachers"
    found = {}
    for task, run_dir in recipe.objective.feature_teachers.items():
        values = lookup(run_dir, f"{key}.{task}")
        if list(values["data"]["tasks"]) != [task]:
            raise UserError(
                f"{key}.{task}: {run_dir} was trained on tasks {values['data']['tasks']}, "
                f"not on [{task}] alone; point it at a single-task run of {task!r} "
                f"(e.g. recipes/paper/<dataset>/single_{task}.yaml).")
        _same(f"{key}.{task}", run_dir, "data.image_size", values["data"]["image_size"],
              list(recipe.data.image_size))
        found[task] = values
    return found


def _same(key, run_dir, field, theirs, ours):
    if list(theirs) != list(ours):
        raise UserError(
            f"{key}: {run_dir} was trained with {field} {list(theirs)}, this recipe has "
            f"{list(ours)}; train the teacher with the same {field}.")
