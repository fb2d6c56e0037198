"""The train step of this checkout against another one, timed in turns: ``bench --against``.

The machine's speed drifts by 10-20% within minutes, so two steps timed
one after the other, or in processes run one after the other, differ by as
much as the change being measured. Here both versions run at once, each in
its own process with the recipe's model built and traced, and take turns:
one runs a block of steps while the other waits on a pipe (idle, no CPU).
Blocks alternate (this, other, other, this, ...), so each pair of blocks
sees the same stretch of the machine's speed, and the ratio of each pair is
a paired measurement.

The other checkout is any version of this project from 0.1 on (a ``git
worktree add DIR COMMIT``): its worker imports its own ``keras_sdmtcnn``
through the three functions every version has (``load_recipe``,
``build_datasets``, ``compiled_model``).
"""

import os
import statistics
import subprocess
import sys
import tempfile

from keras_sdmtcnn.errors import UserError

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The worker runs with ``python -c`` in the checkout's root, so that
# ``import keras_sdmtcnn`` finds that checkout's package (not this one).
# It speaks on a copy of stdout; anything the library prints goes to stderr.
# Protocol: "ready FIRST_STEP_SECONDS", then one line of mean seconds per
# step for each "N" it reads, until "0".
WORKER = r"""
import os, sys, time
protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
recipe_path, overrides = sys.argv[1], sys.argv[2:]
import keras
from keras_sdmtcnn.config import load_recipe
from keras_sdmtcnn.data.datasets import build_datasets
try:  # where each version keeps it
    from keras_sdmtcnn.training import builders
except ImportError:
    from keras_sdmtcnn.models import builders
recipe = load_recipe(recipe_path, overrides)
try:  # where each version keeps it
    from keras_sdmtcnn.process.settings import configure_process
except ImportError:
    configure_process = getattr(builders, "configure_process", lambda recipe: None)
configure_process(recipe)
datasets, info = build_datasets(recipe, verbose=False)
x, y = next(iter(datasets["train"]))
keras.utils.set_random_seed(recipe.training.seed)
model = builders.compiled_model(recipe, info.num_classes, info.ignore_label)
start = time.perf_counter()
model.train_on_batch(x, y)
first = time.perf_counter() - start
for _ in range(3):
    model.train_on_batch(x, y)
protocol.write(f"ready {first}\n")
protocol.flush()
for line in sys.stdin:
    steps = int(line)
    if steps == 0:
        break
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    protocol.write(f"{(time.perf_counter() - start) / steps}\n")
    protocol.flush()
"""


class _Worker:
    """One checkout's worker process."""

    def __init__(self, root, recipe_path, overrides, label):
        self.label = label
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, recipe_path, *overrides], cwd=root, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            said = [text for text in self.stderr.read().splitlines() if text.strip()]
            cause = said[-1].strip() if said else "no message"  # the exception's line
            raise UserError(f"the train step of {self.label} could not be timed "
                            f"(its worker exited with code {self.process.returncode}): {cause}")
        return line.split()

    def ready(self):
        return float(self.read()[1])  # "ready SECONDS"

    def steps(self, count):
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        return float(self.read()[0])

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write("0\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
        self.stderr.close()


def check_checkout(path):
    """The absolute root of another checkout of this project, or one ``UserError``."""
    root = os.path.abspath(path)
    if not os.path.isfile(os.path.join(root, "keras_sdmtcnn", "__init__.py")):
        raise UserError(f"--against {path}: no keras_sdmtcnn package there; give the root "
                        "of another checkout of this project (git worktree add DIR COMMIT).")
    return root


def paired_train_steps(recipe_path, overrides, against, blocks=16, steps=10, say=print):
    """This checkout's train step against ``against``'s, in alternating blocks.

    Returns the first train step of each (fresh processes, one at a time),
    the mean step of each block, the median of each side, and the ratios
    (the other's time over this one's: above 1 is this checkout faster).
    """
    other_root = check_checkout(against)
    if blocks < 1 or steps < 1:
        raise UserError("--blocks and --block-steps must be at least 1.")
    from keras_sdmtcnn.config import load_recipe

    load_recipe(recipe_path, overrides)  # a bad recipe: its error line, before any process
    recipe_path = os.path.abspath(recipe_path)
    labels = {"this": f"this checkout ({PACKAGE_ROOT})", "other": other_root}
    workers = {}
    try:
        first = {}
        for side, root in (("other", other_root), ("this", PACKAGE_ROOT)):
            say(f"building and tracing the model of {labels[side]} ...")
            workers[side] = _Worker(root, recipe_path, overrides, labels[side])
            first[side] = workers[side].ready()
        times = {"this": [], "other": []}
        for block in range(blocks):
            for side in (("this", "other") if block % 2 == 0 else ("other", "this")):
                times[side].append(workers[side].steps(steps))
            say(f"block {block + 1}/{blocks}: this {times['this'][-1]:.3f} s, "
                f"other {times['other'][-1]:.3f} s a step")
    finally:
        for worker in workers.values():
            worker.close()
    ratios = [o / t for o, t in zip(times["other"], times["this"])]
    median = {side: statistics.median(values) for side, values in times.items()}
    return {
        "this": PACKAGE_ROOT, "other": other_root, "blocks": blocks, "steps_per_block": steps,
        "first_train_step_s": first, "block_step_s": times, "median_step_s": median,
        "speedup_median_of_blocks": statistics.median(ratios),
        "speedup_min": min(ratios), "speedup_max": max(ratios),
        "speedup_of_medians": median["other"] / median["this"],
    }


def paired_table(result):
    """The paired figures as a few readable lines."""
    first, median = result["first_train_step_s"], result["median_step_s"]
    return "\n".join([
        f"train step of this checkout against {result['other']}, "
        f"{result['blocks']} alternating blocks of {result['steps_per_block']} steps each:",
        f"  first train step (fresh process): this {first['this']:.1f} s, "
        f"other {first['other']:.1f} s",
        f"  steady train step (median block): this {median['this']:.4f} s, "
        f"other {median['other']:.4f} s",
        f"  speed-up, other / this: {result['speedup_median_of_blocks']:.3f}x the median of "
        f"the block pairs (from {result['speedup_min']:.3f}x to {result['speedup_max']:.3f}x), "
        f"{result['speedup_of_medians']:.3f}x the ratio of the medians",
    ]) + "\n"
