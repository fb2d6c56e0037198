"""A plan's results: the paper-layout table, its CSV, Delta_m and the validation curves.

- ``results.md`` and ``results.csv``: rows Teacher and Student per method
  (Teacher only for ``teacher_only`` runs), a "Single task" row made of the
  reference runs, columns every task metric with its direction (↑/↓), and
  Delta_m; with several seeds each cell is ``mean ± std`` over seeds (the
  sample standard deviation).
- ``curves.png``: per task, the headline validation metric per epoch of
  every method's Teacher (solid) and Student (dashed), the supplementary's
  Figure 1.
- ``seeds.png`` (with several seeds): per task, each row's last-epoch
  headline metric, one dot per seed, with the mean ± std, to see the spread
  and the outliers behind a ``mean ± std`` cell.

Metrics are those of the recipe's validation split: the last epoch, and
with the plan's ``last_epochs: N`` also the mean of each value over the last
N epochs (MTAN's paper reports N = 10). The recipes' ``evaluation``
convention (pooled over the split, or MTAN's per-batch means) is named in
the text above the tables.

Delta_m (:data:`DELTA_M`) counts each task's standard metrics
(``Metric.in_delta_m``: the normal's cosine does not count):

- ``libmtl`` (the default; LibMTL, MTAN and the papers built on them,
  after Maninis et al. 2019): per task, the mean over its metrics of the
  relative change against the single-task reference, sign flipped for
  lower-is-better metrics; then the mean over the row's tasks, in percent.
  Positive is better.
- ``cagrad`` (CAGrad, Nash-MTL): the mean over all the metrics of all tasks
  of ``(-1)^d (M - B) / B``, ``d = 1`` for a higher-is-better metric, in
  percent. Positive is worse.

Each seed's row is compared with the reference's mean over seeds.
"""

import csv
import dataclasses
import io
import math
import os

import numpy as np

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir
from keras_sdmtcnn.tasks import column_header, get_task, log_key


@dataclasses.dataclass(frozen=True)
class DeltaMConvention:
    name: str
    higher_is_better: bool
    header: str
    description: str


DELTA_M = {
    "libmtl": DeltaMConvention(
        "libmtl", True, "Δm % ↑",
        "Δm as LibMTL and MTAN-based papers: per task, the mean of ±(M − B)/B over its "
        "standard metrics (the normal's cosine excluded), then the mean over tasks; "
        "positive is better"),
    "cagrad": DeltaMConvention(
        "cagrad", False, "Δm % ↓",
        "Δm as CAGrad and Nash-MTL: the mean of (−1)^δ (M − B)/B over all standard metrics "
        "of all tasks (δ = 1 where higher is better; the normal's cosine excluded); "
        "positive is worse"),
}


def final_record(run_dir):
    history = RunDir(run_dir).read_history()
    return history[-1], history


TEST_AT_BEST = "test_at_best"


def summary_record(run_dir, last_epochs=1):
    """The last epoch's record, or each value's mean over the last ``last_epochs`` epochs.

    ``last_epochs="test_at_best"``: the test split's metrics of the epoch the
    held-out split chose (``RunDir.read_test_at_best``), keyed as validation logs.
    """
    if last_epochs == TEST_AT_BEST:
        test = RunDir(run_dir).read_test_at_best()
        if test is None:
            raise UserError(f"{run_dir} has no {RunDir.TEST_AT_BEST}: run the plan again.")
        return {f"val_{k}": v for k, v in test["metrics"].items()}
    history = RunDir(run_dir).read_history()
    if last_epochs > len(history):
        raise UserError(
            f"Plan key last_epochs is {last_epochs}, but {run_dir} has {len(history)} "
            f"epoch(s): set last_epochs to at most {len(history)}.")
    window = history[-last_epochs:]
    keys = set().union(*window)
    return {k: float(np.mean([r[k] for r in window])) for k in keys
            if all(isinstance(r.get(k), (int, float)) for r in window)}


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


def delta_m(row, reference, convention="libmtl"):
    """Delta_m in percent of ``row`` against ``reference`` (both ``{task: {metric: value}}``).

    Only each task's standard metrics count (``TaskSpec.delta_m_metrics``).
    ``libmtl``: per task, the mean over metrics of ``+-(M - B) / B`` (minus
    for lower-is-better metrics), then the mean over the tasks both have;
    positive is better. ``cagrad``: the mean over all those metrics of all
    tasks of ``-+(M - B) / B``; positive is worse. ``None`` when no task is
    shared; NaN when a value is NaN (a split without valid pixels).
    """
    if convention not in DELTA_M:
        raise ValueError(f"convention must be one of {', '.join(DELTA_M)}, got {convention!r}.")
    per_task, all_changes = [], []
    for task, metrics in row.items():
        if task not in reference:
            continue
        changes = []
        for metric in get_task(task).delta_m_metrics:
            base = reference[task].get(metric.key)
            value = metrics.get(metric.key)
            if base is None or value is None or base == 0:
                continue
            sign = 1.0 if metric.higher_is_better else -1.0
            changes.append(sign * (value - base) / abs(base))
        if changes:
            per_task.append(np.mean(changes))
            all_changes += changes
    if not per_task:
        return None
    if convention == "cagrad":
        return float(-100 * np.mean(all_changes))
    return float(100 * np.mean(per_task))


def collect(plan, recipes, last_epochs=1, convention=None):
    """Rows of the results table: ``[{"method", "branch", "seeds", "values": [...]}]``.

    ``values`` holds one ``{task: {metric: value}}`` per seed, of the last
    epoch or the mean over the last ``last_epochs``; the first row is the
    single-task reference (when the plan has one). ``convention`` is the
    Delta_m convention (default: the plan's).
    """
    convention = convention or plan.delta_m

    rows = []
    reference_names = set(plan.reference.values())
    if plan.reference:
        per_seed = []
        for seed in plan.seeds:
            merged = {}
            for task, name in plan.reference.items():
                record = summary_record(plan.run_dir(name, seed), last_epochs)
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
            per_seed = [task_metrics(summary_record(plan.run_dir(run.name, s), last_epochs),
                                     tasks, branch)
                        for s in plan.seeds]
            rows.append({"method": run.label, "branch": branch.capitalize(), "name": run.name,
                         "values": per_seed})
    reference = None
    if plan.reference:
        reference = _mean_values(rows[0]["values"])
    for row in rows:
        row["delta_m"] = [delta_m(v, reference, convention) if reference else None
                          for v in row["values"]]
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
    if any(math.isnan(v) for v in values):
        return math.nan, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _cell(values, digits=4):
    mean, std = _stats(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(rows, convention="libmtl"):
    cols = columns(rows)
    header = DELTA_M[convention].header
    lines = ["| Method | Model | " + " | ".join(h for _, _, h in cols) + f" | {header} |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for row in rows:
        cells = [_cell([v.get(t, {}).get(m) for v in row["values"]]) for t, m, _ in cols]
        cells.append(_cell(row["delta_m"], 2))
        lines.append(f"| {row['method']} | {row['branch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(tables, convention="libmtl"):
    """CSV of ``[(statistic, rows)]``, one line per row and statistic (``mean_last_N``...)."""
    cols = columns(tables[0][1])
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["method", "model", "seeds", "statistic"]
    for _, _, h in cols + [(None, None, f"delta_m_percent_{convention}")]:
        header += [h, f"{h} std"]
    writer.writerow(header)
    for statistic, rows in tables:
        _csv_rows(writer, rows, cols, statistic)
    return out.getvalue()


def _csv_rows(writer, rows, cols, statistic):
    for row in rows:
        line = [row["method"], row["branch"], len(row["values"]), statistic]
        for task, metric, _ in cols:
            mean, std = _stats([v.get(task, {}).get(metric) for v in row["values"]])
            line += ["" if mean is None else f"{mean:.6g}", "" if std is None else f"{std:.6g}"]
        mean, std = _stats(row["delta_m"])
        line += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}"]
        writer.writerow(line)


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


def seed_spread(rows):
    """``{task: [(row label, [headline metric per seed])]}`` of a results table's rows."""
    tasks = list(dict.fromkeys(task for task, _, _ in columns(rows)))
    spread = {}
    for row in rows:
        label = f"{row['method']} ({row['branch'][0]})"
        for task in tasks:
            metric = get_task(task).main_metric
            values = [v[task][metric] for v in row["values"] if metric in v.get(task, {})]
            if values:
                spread.setdefault(task, []).append((label, values))
    return spread


def plot_seed_spread(rows, path):
    """Per task, every row's headline metric per seed (dots) and its mean ± std (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_sdmtcnn.io import atomic_savefig

    spread = seed_spread(rows)
    width = max(3.2, 0.9 * max(len(entries) for entries in spread.values()))
    fig, axes = plt.subplots(1, len(spread), figsize=(width * len(spread), 4.4), squeeze=False)
    jitter = np.random.default_rng(0)  # dots spread sideways, the same on every call
    for ax, (task, entries) in zip(axes[0], spread.items()):
        for x, (label, values) in enumerate(entries):
            color = plt.get_cmap("tab10")(x % 10)
            ax.scatter(x + jitter.uniform(-0.15, 0.15, len(values)), values, s=12,
                       color=color, alpha=0.75)
            mean, std = _stats(values)
            ax.errorbar(x + 0.32, mean, yerr=std or 0.0, fmt="o", color="black", capsize=3)
        ax.set_xticks(range(len(entries)), [label for label, _ in entries], rotation=30,
                      ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(entries) - 0.2)
        ax.set_title(column_header(task, get_task(task).main_metric), fontsize=10)
    fig.suptitle(f"Last epoch, {max(len(v) for e in spread.values() for _, v in e)} seeds: "
                 "one dot per seed, mean ± std beside", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)


def evaluation_conventions(plan, recipes):
    """The evaluation convention(s) of the plan's recipes, in words."""
    said = []
    for recipe in recipes.values():
        evaluation = getattr(recipe, "evaluation", None)
        if evaluation is None or evaluation.convention == "pooled":
            text = "metrics pooled over the split's pixels"
        else:
            batch = evaluation.batch_size or recipe.training.batch_size
            text = (f"depth and normal metrics as MTAN's code (means of per-batch values, "
                    f"batches of {batch})")
        if text not in said:
            said.append(text)
    return "; ".join(said)


def write_results(plan, recipes, wall_seconds=None):
    """Writes ``results.md``, ``results.csv``, ``curves.png`` and (with several
    seeds) ``seeds.png``; returns the Markdown."""
    from keras_sdmtcnn.io import atomic_write_text
    from keras_sdmtcnn.runs.machine import machine

    convention = plan.delta_m
    last = plan.last_epochs
    tables = [("last", "Last epoch", collect(plan, recipes, 1, convention))]
    if last and last > 1:
        tables.append((f"mean_last_{last}", f"Mean of the last {last} epochs",
                       collect(plan, recipes, last, convention)))
    if all(getattr(r.data, "val_source", "val") == "holdout" for r in recipes.values()):
        monitors = sorted({r.output.monitor for r in recipes.values()})
        tables.append((TEST_AT_BEST,
                       f"Test split, at the epoch the held-out split chose "
                       f"(best {', '.join(monitors)})",
                       collect(plan, recipes, TEST_AT_BEST, convention)))
    seconds = 0.0
    for run in plan.runs:
        for seed in plan.seeds:
            run_dir = plan.run_dir(run.name, seed)
            for folder in (run_dir, RunDir(run_dir).stage1().path):
                seconds += RunDir(folder).status().get("seconds", 0.0)
    m = machine()
    header = (f"Plan `{plan.name}`: {len(plan.runs)} runs x {len(plan.seeds)} seed(s) "
              f"({', '.join(map(str, plan.seeds))}); validation split, "
              f"{evaluation_conventions(plan, recipes)}; "
              + (f"{DELTA_M[convention].description}, against the single-task rows, "
                 f"over {', '.join(plan.reference)}" if plan.reference
                 else "no Δm (the plan names no single-task reference)")
              + (" (the runs' other tasks do not count)" if plan.delta_m_partial else "")
              + ".\n"
              f"Training time, all runs: {seconds / 60:.1f} min"
              + (f" (this invocation: {wall_seconds / 60:.1f} min)" if wall_seconds else "")
              + f" on {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}.\n\n")
    if tables[-1][0] == TEST_AT_BEST:
        header += ("The runs validate on a held-out part of train: the first tables are that "
                   "held-out split, the last the test split.\n\n")
    text = header + "\n".join(f"### {title}\n\n{markdown(rows, convention)}"
                               for _, title, rows in tables)
    os.makedirs(plan.out_dir, exist_ok=True)
    atomic_write_text(os.path.join(plan.out_dir, "results.md"), text)
    atomic_write_text(os.path.join(plan.out_dir, "results.csv"),
                      csv_text([(stat, rows) for stat, _, rows in tables], convention))
    plot_validation_curves(plan, recipes, os.path.join(plan.out_dir, "curves.png"))
    if len(plan.seeds) > 1:
        plot_seed_spread(tables[0][2], os.path.join(plan.out_dir, "seeds.png"))
    return text


