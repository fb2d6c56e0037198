"""Readable results: per-epoch lines, paper-style tables, training-curve pictures."""

from keras_sdmtcnn.tasks import ARROW, BRANCHES, column_header, get_task, log_key


def epoch_line(epoch, logs, tasks):
    """One line per epoch: loss, val loss and each task's headline metric per branch."""
    parts = [f"epoch {epoch:>3}", f"loss {logs.get('loss', float('nan')):.4f}"]
    if "val_loss" in logs:
        parts.append(f"val_loss {logs['val_loss']:.4f}")
    for task in tasks:
        metric = get_task(task).metric_by_key(get_task(task).main_metric)
        values = []
        for branch in BRANCHES:
            key = log_key(task, branch, metric.key, "val")
            if key in logs:
                values.append(f"{branch[0].upper()} {logs[key]:.4f}")
        if values:
            parts.append(f"{task} {metric.label}{ARROW[metric.higher_is_better]} "
                         + " / ".join(values))
    return " | ".join(parts)


def result_rows(results, tasks):
    """Paper-style rows: ``[(branch, {column: value})]`` with arrowed column names."""
    rows = []
    for branch in BRANCHES:
        row = {}
        for task in tasks:
            for metric in get_task(task).metric_keys:
                key = log_key(task, branch, metric)
                if key in results:
                    row[column_header(task, metric)] = float(results[key])
        if row:
            rows.append((branch.capitalize(), row))
    return rows


def markdown_table(rows):
    columns = list(rows[0][1])
    lines = ["| Model | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(history, tasks, path):
    """Saves a PNG: train/val loss, and each task's headline metric, Teacher vs Student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_sdmtcnn.io import atomic_savefig

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4 * (len(tasks) + 1), 3.2))
    ax = axes[0]
    for key in ("loss", "val_loss"):
        ax.plot(epochs, [h.get(key) for h in history], marker=".", label=key)
    ax.set_title("objective")
    ax.set_xlabel("epoch")
    ax.legend()
    for ax, task in zip(axes[1:], tasks):
        metric = get_task(task).main_metric
        for branch in BRANCHES:
            key = log_key(task, branch, metric, "val")
            ax.plot(epochs, [h.get(key) for h in history], marker=".", label=branch)
        ax.set_title(column_header(task, metric))
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)
