"""Plans: the YAML files that list the runs of an experiment (``experiments``).

A plan lists runs (a recipe and optional ``--set`` overrides each), the
seeds to repeat them with, and which single-task runs are the reference of
Delta_m::

    name: synthetic_methods              # default: the plan file's stem
    out_dir: runs/experiments/synthetic  # default: runs/experiments/<name>
    seeds: [0]                           # each run once per seed (training.seed)
    set: [training.epochs=10]            # overrides for every run
    reference: {semantic: single_semantic, depth: single_depth}
    last_epochs: 10                      # also the mean of the last 10 epochs (MTAN's paper)
    delta_m: libmtl                      # or cagrad (CAGrad / Nash-MTL)
    delta_m_partial: false               # true: allow runs with tasks the reference lacks
    runs:
      - name: single_semantic
        recipe: ../recipes/paper/synthetic/single_semantic.yaml   # relative to the plan
        label: Single task (semantic)
      - name: li_bilen
        recipe: ../recipes/paper/synthetic/li_bilen.yaml
        set: ["objective.experts={semantic: ${run:single_semantic}}"]

``${run:NAME}`` in an override is the run directory of the plan's run NAME
(same seed), which must come earlier in the list. This module reads and
checks the plan file itself; the runner (``workflows/experiments.py``)
loads its recipes.
"""

import dataclasses
import difflib
import os
import re

from keras_sdmtcnn.config.loading import read_yaml_mapping
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import get_task

RUN_REF = re.compile(r"\$\{run:([A-Za-z0-9_.-]+)\}")
PLAN_KEYS = ("name", "out_dir", "seeds", "set", "reference", "runs", "last_epochs", "delta_m",
             "delta_m_partial")
DELTA_M_CONVENTIONS = ("libmtl", "cagrad")
RUN_KEYS = ("name", "recipe", "label", "set")


@dataclasses.dataclass
class PlanRun:
    name: str
    recipe: str
    label: str
    overrides: list


@dataclasses.dataclass
class Plan:
    name: str
    out_dir: str
    seeds: list
    overrides: list
    reference: dict
    runs: list
    last_epochs: int | None = None  # also tabulate the mean of the last N epochs
    delta_m: str = "libmtl"  # libmtl (per-task mean, higher is better) | cagrad
    # Δm over the reference's tasks alone, for runs that have more (else refused).
    delta_m_partial: bool = False

    def run_dir(self, name, seed):
        return os.path.join(self.out_dir, name, f"seed-{seed}")


def _check_keys(values, allowed, where):

    for key in values:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UserError(
                f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(allowed)}.")


def _string_list(value, where):
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of KEY=VALUE strings, got {value!r}.")
    return list(value)


def load_plan(path):
    """Reads and checks a plan file (not the recipes yet)."""
    values = read_yaml_mapping(path, "Plan")
    _check_keys(values, PLAN_KEYS, path)
    name = values.get("name") or os.path.splitext(os.path.basename(path))[0]
    runs_values = values.get("runs")
    if not isinstance(runs_values, list) or not runs_values:
        raise UserError(f"{path}: `runs` must be a non-empty list of {{name, recipe}} entries.")
    here = os.path.dirname(os.path.abspath(path))
    runs, names = [], set()
    for i, entry in enumerate(runs_values):
        where = f"{path}: runs[{i}]"
        if not isinstance(entry, dict) or "recipe" not in entry:
            raise UserError(f"{where} must be a mapping with at least `recipe`, got {entry!r}.")
        _check_keys(entry, RUN_KEYS, where)
        recipe = str(entry["recipe"])
        run_name = str(entry.get("name") or os.path.splitext(os.path.basename(recipe))[0])
        if run_name in names:
            raise UserError(f"{where}: the run name {run_name!r} is used twice; give it a `name`.")
        names.add(run_name)
        candidates = [os.path.join(here, recipe), recipe]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise UserError(
                f"{where} ({run_name}): recipe {recipe} does not exist (looked in "
                f"{here} and the current directory).")
        runs.append(PlanRun(run_name, os.path.normpath(found), str(entry.get("label") or run_name),
                            _string_list(entry.get("set"), f"{where}.set")))
    seeds = check_seeds(values.get("seeds", [0]), f"{path}: seeds")
    last = values.get("last_epochs")
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 1):
        raise UserError(f"{path}: last_epochs must be an integer >= 1, got {last!r}.")
    delta_m = check_delta_m(values.get("delta_m", "libmtl"), f"{path}: delta_m")
    reference = values.get("reference") or {}
    if not isinstance(reference, dict):
        raise UserError(f"{path}: reference must map tasks to single-task run names.")
    for task, run_name in reference.items():
        get_task_or_error(task, f"{path}: reference")
        if run_name not in names:
            raise UserError(
                f"{path}: reference.{task} names {run_name!r}, which is not a run of the plan "
                f"({', '.join(sorted(names))}).")
    partial = values.get("delta_m_partial", False)
    if not isinstance(partial, bool):
        raise UserError(f"{path}: delta_m_partial must be true or false, got {partial!r}.")
    overrides = _string_list(values.get("set"), f"{path}: set")
    for where, sets in [(f"{path}: set", overrides)] + [
            (f"{path}: runs[{i}].set ({run.name})", run.overrides) for i, run in enumerate(runs)]:
        _no_seed(sets, where)
    out_dir = values.get("out_dir") or os.path.join("runs", "experiments", name)
    return Plan(name, out_dir, seeds, overrides, dict(reference), runs, last, delta_m, partial)


def _no_seed(overrides, where):
    """A plan's seeds come from its ``seeds`` key (or ``--seeds``), never from ``set``."""
    for text in overrides:
        if text.split("=", 1)[0].strip() == "training.seed":
            raise UserError(
                f"{where} sets training.seed ({text}), which the plan's seeds would replace: "
                "list the seeds under `seeds` (or pass --seeds) and remove it from set.")


def check_seeds(seeds, where):
    """A non-empty list of distinct seeds that TensorFlow accepts."""
    from keras_sdmtcnn.config.schema import MAX_SEED

    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or not all(0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds)):
        raise UserError(
            f"{where} must be a non-empty list of distinct integers from 0 to {MAX_SEED}, "
            f"got {seeds!r}.")
    return seeds


def check_delta_m(value, where):
    if value not in DELTA_M_CONVENTIONS:
        raise UserError(
            f"{where} must be one of {', '.join(DELTA_M_CONVENTIONS)} (libmtl: per task, then "
            f"over tasks, higher is better; cagrad: over all metrics, lower is better); "
            f"got {value!r}.")
    return value


def get_task_or_error(task, where):
    try:
        return get_task(task)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


