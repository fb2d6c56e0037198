"""``python -m keras_sdmtcnn.experiments PLAN.yaml``: run recipes, tabulate them as the paper does.

A plan lists runs (a recipe and optional ``--set`` overrides each), the
seeds to repeat them with, and which single-task runs are the reference of
Delta_m::

    name: synthetic_methods              # default: the plan file's stem
    out_dir: runs/experiments/synthetic  # default: runs/experiments/<name>
    seeds: [0]                           # each run once per seed (training.seed)
    set: [training.epochs=10]            # overrides for every run
    reference: {semantic: single_semantic, depth: single_depth}
    runs:
      - name: single_semantic
        recipe: ../recipes/paper/synthetic/single_semantic.yaml   # relative to the plan
        label: Single task (semantic)
      - name: li_bilen
        recipe: ../recipes/paper/synthetic/li_bilen.yaml
        set: ["objective.feature_teachers={semantic: ${run:single_semantic}}"]

``${run:NAME}`` in an override is the run directory of the plan's run NAME
(same seed), which must come earlier in the list. Every recipe is loaded and
every teacher it names is checked before the first run starts. Runs train
in order into ``OUT_DIR/NAME/seed-S``; a finished run (``run.json`` says
``complete``) is not trained again and an interrupted one resumes, so
running the plan again after a crash finishes it.

Results (written atomically to ``OUT_DIR``):

- ``results.md`` and ``results.csv``: rows Teacher and Student per method
  (Teacher only for ``teacher_only`` runs), a "Single task" row made of the
  reference runs, columns every task metric with its direction (↑/↓), and
  Delta_m; with several seeds each cell is ``mean ± std`` over seeds (the
  sample standard deviation).
- ``curves.png``: per task, the headline validation metric per epoch of
  every method's Teacher (solid) and Student (dashed), the supplementary's
  Figure 1.

Metrics are those of the last epoch on the recipe's validation split.
Delta_m follows Maninis et al. 2019 and LibMTL: per task, the mean over its
metrics of the relative change against the single-task reference, sign
flipped for lower-is-better metrics; then the mean over the row's tasks,
in percent. Each seed's row is compared with the reference's mean over
seeds.
"""

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import time

import numpy as np
from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.reporting import ARROW, SHORT
from keras_sdmtcnn.tasks import get_task

RUN_REF = re.compile(r"\$\{run:([A-Za-z0-9_.-]+)\}")
PLAN_KEYS = ("name", "out_dir", "seeds", "set", "reference", "runs")
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

    def run_dir(self, name, seed):
        return os.path.join(self.out_dir, name, f"seed-{seed}")


def _check_keys(values, allowed, where):
    import difflib

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
    from keras_sdmtcnn.recipes import read_yaml_mapping

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
    seeds = values.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise UserError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}.")
    reference = values.get("reference") or {}
    if not isinstance(reference, dict):
        raise UserError(f"{path}: reference must map tasks to single-task run names.")
    for task, run_name in reference.items():
        get_task_or_error(task, f"{path}: reference")
        if run_name not in names:
            raise UserError(
                f"{path}: reference.{task} names {run_name!r}, which is not a run of the plan "
                f"({', '.join(sorted(names))}).")
    out_dir = values.get("out_dir") or os.path.join("runs", "experiments", name)
    return Plan(name, out_dir, seeds, _string_list(values.get("set"), f"{path}: set"),
                dict(reference), runs)


def get_task_or_error(task, where):
    try:
        return get_task(task)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def resolve_recipes(plan):
    """``{(run name, seed): Recipe}``, every recipe loaded and checked, teachers included."""
    from keras_sdmtcnn.recipes import load_recipe, recipe_to_dict
    from keras_sdmtcnn.teachers import (
        check_feature_teachers, check_frozen_teacher, finished_run_recipe)

    recipes, order = {}, [r.name for r in plan.runs]
    for seed in plan.seeds:
        planned = {}  # run directory -> recipe dict, of runs trained before this one
        for position, run in enumerate(plan.runs):
            def substitute(text, run=run, position=position):
                def repl(match):
                    target = match.group(1)
                    if target not in order[:position]:
                        raise UserError(
                            f"Plan run {run.name}: ${{run:{target}}} must name a run listed "
                            f"before it ({', '.join(order[:position]) or 'none'}).")
                    return os.path.abspath(plan.run_dir(target, seed))
                return RUN_REF.sub(repl, text)

            overrides = [substitute(o) for o in plan.overrides + run.overrides]
            overrides.append(f"training.seed={seed}")
            try:
                recipe = load_recipe(run.recipe, overrides)
            except UserError as e:
                raise UserError(f"Plan run {run.name}: {e}") from None

            def lookup(run_dir, key, planned=planned, run=run):
                known = planned.get(os.path.abspath(run_dir))
                if known is not None:
                    return known
                try:
                    return finished_run_recipe(run_dir, key)
                except UserError as e:
                    raise UserError(f"Plan run {run.name}: {e}") from None

            if recipe.objective.frozen_teacher not in (None, "train"):
                check_frozen_teacher(recipe, recipe.objective.frozen_teacher, lookup)
            if recipe.objective.feature_teachers:
                check_feature_teachers(recipe, lookup)
            recipes[(run.name, seed)] = recipe
            planned[os.path.abspath(plan.run_dir(run.name, seed))] = recipe_to_dict(recipe)
    for task, name in plan.reference.items():
        tasks = list(recipes[(name, plan.seeds[0])].data.tasks)
        if tasks != [task]:
            raise UserError(
                f"Plan reference.{task}: run {name} trains {tasks}, not [{task}] alone.")
    return recipes


def _status(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def run_plan(plan, recipes, verbose=1):
    """Trains every run that is not finished yet, in order, seed by seed."""
    import keras

    from keras_sdmtcnn.fit import fit

    total = len(plan.runs) * len(plan.seeds)
    done = 0
    for seed in plan.seeds:
        for run in plan.runs:
            done += 1
            run_dir = plan.run_dir(run.name, seed)
            if _status(run_dir).get("status") == "complete":
                if verbose:
                    print(f"[{done}/{total}] {run.name} seed {seed}: finished earlier ({run_dir})")
                continue
            if verbose:
                print(f"[{done}/{total}] {run.name} seed {seed}: training in {run_dir}")
            recipe = recipes[(run.name, seed)]
            recipe.output.verbose = verbose
            fit(recipe, run_dir)
            keras.backend.clear_session()


# === Results ===


def final_record(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        history = json.load(f)
    return history[-1], history


def task_metrics(record, tasks, branch):
    """``{task: {metric: value}}`` of one branch from a record of epoch logs."""
    out = {}
    for task in tasks:
        values = {m: record.get(f"val_{task}_{branch}_{m}") for m, _ in get_task(task).metrics}
        values = {m: float(v) for m, v in values.items() if v is not None}
        if values:
            out[task] = values
    return out


def delta_m(row, reference):
    """Delta_m in percent of ``row`` against ``reference`` (both ``{task: {metric: value}}``).

    Per task, the mean over metrics of ``+-(M - B) / B`` (minus for
    lower-is-better metrics); then the mean over the tasks both have.
    ``None`` when no task is shared.
    """
    per_task = []
    for task, metrics in row.items():
        if task not in reference:
            continue
        changes = []
        for metric, higher in get_task(task).metrics:
            base = reference[task].get(metric)
            value = metrics.get(metric)
            if base is None or value is None or base == 0:
                continue
            sign = 1.0 if higher else -1.0
            changes.append(sign * (value - base) / abs(base))
        if changes:
            per_task.append(np.mean(changes))
    return float(100 * np.mean(per_task)) if per_task else None


def collect(plan, recipes):
    """Rows of the results table: ``[{"method", "branch", "seeds", "values": [...]}]``.

    ``values`` holds one ``{task: {metric: value}}`` per seed; the first row
    is the single-task reference (when the plan has one).
    """
    rows = []
    reference_names = set(plan.reference.values())
    if plan.reference:
        per_seed = []
        for seed in plan.seeds:
            merged = {}
            for task, name in plan.reference.items():
                record, _ = final_record(plan.run_dir(name, seed))
                merged.update(task_metrics(record, [task], "teacher"))
            per_seed.append(merged)
        rows.append({"method": "Single task", "branch": "Teacher", "name": None,
                     "values": per_seed})
    for run in plan.runs:
        if run.name in reference_names:
            continue
        recipe = recipes[(run.name, plan.seeds[0])]
        tasks = list(recipe.data.tasks)
        branches = ["teacher"] if recipe.objective.name == "teacher_only" else [
            "teacher", "student"]
        for branch in branches:
            per_seed = [task_metrics(final_record(plan.run_dir(run.name, s))[0], tasks, branch)
                        for s in plan.seeds]
            rows.append({"method": run.label, "branch": branch.capitalize(), "name": run.name,
                         "values": per_seed})
    reference = None
    if plan.reference:
        reference = _mean_values(rows[0]["values"])
    for row in rows:
        row["delta_m"] = [delta_m(v, reference) if reference else None for v in row["values"]]
    return rows


def _mean_values(per_seed):
    out = {}
    for values in per_seed:
        for task, metrics in values.items():
            for metric, v in metrics.items():
                out.setdefault(task, {}).setdefault(metric, []).append(v)
    return {t: {m: float(np.mean(v)) for m, v in ms.items()} for t, ms in out.items()}


def columns(rows):
    """``[(task, metric, header)]`` over every task of the rows, in order."""
    seen, cols = [], []
    for row in rows:
        for values in row["values"]:
            for task in values:
                if task not in seen:
                    seen.append(task)
    for task in seen:
        for metric, higher in get_task(task).metrics:
            cols.append((task, metric, f"{task} {SHORT[metric]} {ARROW[higher]}"))
    return cols


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _cell(values, digits=4):
    mean, std = _stats(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(rows):
    cols = columns(rows)
    lines = ["| Method | Model | " + " | ".join(h for _, _, h in cols) + " | Δm % ↑ |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for row in rows:
        cells = [_cell([v.get(t, {}).get(m) for v in row["values"]]) for t, m, _ in cols]
        cells.append(_cell(row["delta_m"], 2))
        lines.append(f"| {row['method']} | {row['branch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows):
    cols = columns(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["method", "model", "seeds"]
    for _, _, h in cols + [(None, None, "delta_m_percent")]:
        header += [h, f"{h} std"]
    writer.writerow(header)
    for row in rows:
        line = [row["method"], row["branch"], len(row["values"])]
        for task, metric, _ in cols:
            mean, std = _stats([v.get(task, {}).get(metric) for v in row["values"]])
            line += ["" if mean is None else f"{mean:.6g}", "" if std is None else f"{std:.6g}"]
        mean, std = _stats(row["delta_m"])
        line += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}"]
        writer.writerow(line)
    return out.getvalue()


def plot_validation_curves(plan, recipes, path):
    """Per task, the headline validation metric per epoch: Teachers solid, Students dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_sdmtcnn.io import atomic_savefig

    tasks = []
    for run in plan.runs:
        tasks += [t for t in recipes[(run.name, plan.seeds[0])].data.tasks if t not in tasks]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    colors = [plt.get_cmap("tab20")(i) for i in range(0, 20, 2)] + [
        plt.get_cmap("tab20")(i) for i in range(1, 20, 2)]
    for ax, task in zip(axes[0], tasks):
        metric = get_task(task).main_metric
        for i, run in enumerate(plan.runs):
            recipe = recipes[(run.name, plan.seeds[0])]
            if task not in recipe.data.tasks:
                continue
            branches = ["teacher"] if recipe.objective.name == "teacher_only" else [
                "teacher", "student"]
            for branch in branches:
                key = f"val_{task}_{branch}_{metric}"
                curves = [[h.get(key) for h in final_record(plan.run_dir(run.name, s))[1]]
                          for s in plan.seeds]
                length = min(len(c) for c in curves)
                mean = np.mean([c[:length] for c in curves], axis=0)
                ax.plot(np.arange(1, length + 1), mean, color=colors[i % len(colors)],
                        linestyle="-" if branch == "teacher" else "--", marker=".",
                        label=f"{run.label} ({branch[0].upper()})")
        ax.set_title(f"{task} {SHORT[metric]} {ARROW[get_task(task).higher_is_better(metric)]}")
        ax.set_xlabel("epoch")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08 + 0.035 * ((len(labels) - 1) // 4), 1, 1))
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)


def write_results(plan, recipes, wall_seconds=None):
    """Writes ``results.md``, ``results.csv`` and ``curves.png``; returns the Markdown."""
    from keras_sdmtcnn.bench import machine
    from keras_sdmtcnn.io import atomic_write_text

    rows = collect(plan, recipes)
    seconds = 0.0
    for run in plan.runs:
        for seed in plan.seeds:
            run_dir = plan.run_dir(run.name, seed)
            for folder in (run_dir, os.path.join(run_dir, "stage1_teacher")):
                seconds += _status(folder).get("seconds", 0.0)
    m = machine()
    header = (f"Plan `{plan.name}`: {len(plan.runs)} runs x {len(plan.seeds)} seed(s) "
              f"({', '.join(map(str, plan.seeds))}); metrics of the last epoch on the "
              f"validation split; Δm against the single-task rows.\n"
              f"Training time, all runs: {seconds / 60:.1f} min"
              + (f" (this invocation: {wall_seconds / 60:.1f} min)" if wall_seconds else "")
              + f" on {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}.\n\n")
    text = header + markdown(rows)
    os.makedirs(plan.out_dir, exist_ok=True)
    atomic_write_text(os.path.join(plan.out_dir, "results.md"), text)
    atomic_write_text(os.path.join(plan.out_dir, "results.csv"), csv_text(rows))
    plot_validation_curves(plan, recipes, os.path.join(plan.out_dir, "curves.png"))
    return text


def run_experiments(plan_path, verbose=1):
    """Loads, checks and runs a plan, then writes its results; returns the Markdown."""
    started = time.time()
    plan = load_plan(plan_path)
    recipes = resolve_recipes(plan)
    if verbose:
        print(f"Plan {plan.name}: {len(plan.runs)} runs x {len(plan.seeds)} seed(s) "
              f"into {plan.out_dir}")
    run_plan(plan, recipes, verbose)
    text = write_results(plan, recipes, time.time() - started)
    if verbose:
        print(text)
        print(f"Wrote {plan.out_dir}/results.md, results.csv and curves.png")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.experiments",
        description="Run the recipes of a plan and tabulate them in the paper's layout.")
    parser.add_argument("plan", help="plan YAML, e.g. recipes/paper/synthetic/plan.yaml")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch output")
    args = parser.parse_args(argv)
    run_experiments(args.plan, verbose=0 if args.quiet else 1)


if __name__ == "__main__":
    cli.run(main)
