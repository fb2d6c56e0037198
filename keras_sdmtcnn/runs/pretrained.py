"""Finished runs that a method distils from: finding and checking them.

Two methods start from networks trained earlier with this library:

- traditional two-stage distillation (the paper's Baseline-3) and KDAM from
  a separately trained network: ``objective.stage1_network: RUN_DIR``, a
  multi-task run on the same tasks and input size, whose Teacher branch is
  frozen;
- Li & Bilen's feature distillation: ``objective.experts: {task: RUN_DIR}``,
  single-task runs, one per task, at the same input size.

Every check here runs before any training starts and names the recipe key,
the run directory and what to do. Loading the networks' weights is the
trainer builders' business (``training/builders.py``).
"""

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir


def finished_run_recipe(run_dir, key):
    """The recipe (as a dict) of a finished run, or a clear error."""
    return RunDir(run_dir).finished(key)[0]


def check_stage1_network(recipe, run_dir, lookup=finished_run_recipe):
    """The multi-task stage-1 run must have this recipe's tasks and input size.

    ``lookup(run_dir, key)`` gives its recipe as a dict (default: from a
    finished run on disk; the experiment runner also knows the runs its
    plan will train first).
    """
    key = "objective.stage1_network"
    values = lookup(run_dir, key)
    _same(key, run_dir, "data.tasks", values["data"]["tasks"], list(recipe.data.tasks))
    _same(key, run_dir, "data.image_size", values["data"]["image_size"],
          list(recipe.data.image_size))
    return values


def check_experts(recipe, lookup=finished_run_recipe):
    """Each single-task expert: a finished run on exactly its task, at this input size."""
    key = "objective.experts"
    found = {}
    for task, run_dir in recipe.objective.experts.items():
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


def check_pretrained(recipe, lookup=finished_run_recipe):
    """Every finished run the recipe's method distils from (none for self-distillation)."""
    if recipe.objective.stage1_network not in (None, "train"):
        check_stage1_network(recipe, recipe.objective.stage1_network, lookup)
    if recipe.objective.experts:
        check_experts(recipe, lookup)


def _same(key, run_dir, field, theirs, ours):
    if list(theirs) != list(ours):
        raise UserError(
            f"{key}: {run_dir} was trained with {field} {list(theirs)}, this recipe has "
            f"{list(ours)}; train it with the same {field}.")
