"""A plan's results: the paper-layout table, its CSV, Delta_m and the validation curves.

- ``results.md`` and ``results.csv``: rows Teacher and Student per method
  (Teacher only for ``teacher_only`` runs), a "Single task" row made of the
  reference runs, columns every task metric with its direction (↑/↓), and
  Delta_m; with several seeds each cell is ``mean ± std`` over seeds (the
  sample standard deviation).
- ``curves.png``: per task, the headline validation metric per epoch of
  every method's Teacher (solid) and Student (dashed), the supplementary's
  Figure 1.

Metrics are those of the last epoch on the recipe's validation split.
Delta_m follows Maninis et al. 2019: per task, the mean over its metrics of
the relative change against the single-task reference, sign flipped for
lower-is-better metrics; then the mean over the row's tasks, in percent.
Each seed's row is compared with the reference's mean over seeds.
"""

import csv
import io
import os

import numpy as np

from keras_sdmtcnn.runs.rundir import RunDir
from keras_sdmtcnn.tasks import column_header, get_task, log_key


def final_record(run_dir):
    history = RunDir(run_dir).read_history()
    return history[-1], history


def task_metrics(record, tasks, branch):
    """``{task: {metric: value}}`` of one branch from a record of epoch logs."""
    out = {}
    for task in tasks:
        values = {m: record.get(log_key(task, branch, m, "val"))
                  for m in get_task(task).metric_keys}
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
        for metric in get_task(task).metrics:
            higher, metric = metric.higher_is_better, metric.key
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
        for metric in get_task(task).metric_keys:
            cols.append((task, metric, column_header(task, metric)))
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
                key = log_key(task, branch, metric, "val")
                curves = [[h.get(key) for h in final_record(plan.run_dir(run.name, s))[1]]
                          for s in plan.seeds]
                length = min(len(c) for c in curves)
                mean = np.mean([c[:length] for c in curves], axis=0)
                ax.plot(np.arange(1, length + 1), mean, color=colors[i % len(colors)],
                        linestyle="-" if branch == "teacher" else "--", marker=".",
                        label=f"{run.label} ({branch[0].upper()})")
        ax.set_title(column_header(task, metric))
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
    from keras_sdmtcnn.io import atomic_write_text
    from keras_sdmtcnn.runs.machine import machine

    rows = collect(plan, recipes)
    seconds = 0.0
    for run in plan.runs:
        for seed in plan.seeds:
            run_dir = plan.run_dir(run.name, seed)
            for folder in (run_dir, RunDir(run_dir).stage1().path):
                seconds += RunDir(folder).status().get("seconds", 0.0)
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


