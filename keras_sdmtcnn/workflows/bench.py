"""The cost of every path of a recipe: what ``python -m keras_sdmtcnn.bench`` calls.

Measures, each as a median over ``--steps`` repetitions after warm-up, and
writes JSON plus a readable table:

- start-up: the time to the first train step and to the first evaluation
  step of the model ``fit`` builds (tracing, graph optimisation, kernel
  set-up: what dominates small runs), beside the steady step;
- parameters and forward FLOPs of the full model, Teacher and Student;
- train step seconds and samples/s for ``teacher_only``, ``separate`` and
  ``ensemble``, and the convolution throughput that the ``separate`` step
  achieves (3 x forward FLOPs x batch / step time: forward plus the two
  backward convolutions), beside the throughput of one large 3x3
  convolution (512 channels, 36x48, batch 1) on the same machine, timed in
  bursts between the ``separate`` steps so that both see the same drift of
  the machine's speed;
- evaluation samples/s;
- batch-1 latency of Teacher and Student as Keras, SavedModel, TFLite
  (float32, fp16, int8; 1 and 2 threads) and ONNX Runtime;
- input-pipeline samples/s alone;
- peak memory (maximum resident set size of the process);
- the speed options that are off by default, each against the default
  ``separate`` step, all three measured in fresh processes (none inherits
  another's heap): XLA (``jit_compile=True``), and glibc's allocator told
  not to return freed memory to the OS (``MALLOC_MMAP_MAX_=0
  MALLOC_TRIM_THRESHOLD_=...``);
- the ``separate`` step and the first train step in float32 and in
  ``mixed_bfloat16``, each in a fresh process, with GFLOP/s for each, and
  the precision ``training.mixed_precision: auto`` picks on this machine
  (everything else is measured in that precision);
- the machine: CPU model, cores, TensorFlow and Keras versions.

Timings are never asserted in tests: they belong to the machine they were
taken on, which the JSON names.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_sdmtcnn.deploy.runtime import median_seconds
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.process.settings import configure_process
from keras_sdmtcnn.runs.machine import machine

REFERENCE_CONV_FLOPS = 2 * 36 * 48 * 512 * 512 * 9


def _reference_conv():
    """A callable running one 3x3 convolution, 512 -> 512 channels, 36x48, batch 1."""
    import keras
    import tensorflow as tf

    conv = keras.layers.Conv2D(512, 3, padding="same", use_bias=False)
    x = tf.random.uniform((1, 36, 48, 512))
    fn = tf.function(lambda: conv(x))
    return lambda: fn().numpy()


def _step_and_reference(model, recipe, batch, objective, steps, burst=10):
    """Median step seconds and the reference convolution's GFLOP/s, taken in turns.

    This machine's speed drifts by 10% and more within minutes (the
    reference convolution alone measured 207 to 444 GFLOP/s in one
    afternoon). A burst of reference convolutions before every timed step
    and after the last puts both figures on the same stretch of time, so
    their ratio does not depend on when each was taken.
    """
    _compile(model, recipe, objective)
    model.train_on_batch(*batch)  # warm-up: tracing
    reference = _reference_conv()
    for _ in range(3):
        reference()
    step_times, conv_times = [], []
    for i in range(steps + 1):
        for _ in range(burst):
            start = time.perf_counter()
            reference()
            conv_times.append(time.perf_counter() - start)
        if i < steps:
            start = time.perf_counter()
            model.train_on_batch(*batch)
            step_times.append(time.perf_counter() - start)
    return float(np.median(step_times)), REFERENCE_CONV_FLOPS / float(np.median(conv_times)) / 1e9


# glibc keeps freed memory instead of returning it to the OS after each step.
NO_TRIM_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def _model_and_batch(recipe):
    import keras

    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.training.builders import build_model

    datasets, info = build_datasets(recipe, verbose=False)
    batch = next(iter(datasets["train"]))
    keras.utils.set_random_seed(recipe.training.seed)
    return build_model(recipe, info.num_classes, info.ignore_label), batch, datasets


def _compile(model, recipe, objective, jit_compile=False):
    import dataclasses

    from keras_sdmtcnn.process.settings import apply_speed
    from keras_sdmtcnn.training.builders import build_optimizer
    from keras_sdmtcnn.training.objectives import get_objective

    model.compile(build_optimizer(recipe.training), get_objective(objective))
    apply_speed(model, dataclasses.replace(recipe.speed, xla=recipe.speed.xla or jit_compile))


def _step_seconds(model, recipe, batch, objective, steps, jit_compile=False):
    _compile(model, recipe, objective, jit_compile)
    return median_seconds(lambda: model.train_on_batch(*batch), steps, warmup=1)


def _fresh_process(module, arguments, env=None, verbose=0):
    """Runs ``python -m module ... --out FILE`` and returns FILE's JSON."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "out.json")
        done = subprocess.run([sys.executable, "-m", module, *arguments, "--out", path],
                              capture_output=not verbose, text=True,
                              env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise UserError(f"python -m {module} {' '.join(arguments)} failed: "
                            f"{(done.stderr or '')[-2000:]}")
        with open(path) as f:
            return json.load(f)


def first_steps(recipe, steps=3):
    """Seconds of the first train step, the first evaluation step, and the steady train step.

    The model is the one ``fit`` builds (``compiled_model``), in a process
    that has traced nothing yet, so the first steps pay what a fresh ``fit``
    pays before its progress bar moves.
    """
    import keras

    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.training.builders import compiled_model

    datasets, info = build_datasets(recipe, verbose=False)
    batch = next(iter(datasets["train"]))
    val_batch = next(iter(datasets["val"]))
    keras.utils.set_random_seed(recipe.training.seed)
    model = compiled_model(recipe, info.num_classes, info.ignore_label)
    started = time.perf_counter()
    model.train_on_batch(*batch)
    first_train = time.perf_counter() - started
    started = time.perf_counter()
    model.test_on_batch(*val_batch)
    first_eval = time.perf_counter() - started
    steady = median_seconds(lambda: model.train_on_batch(*batch), steps, warmup=1)
    keras.backend.clear_session()
    return {"first_train_step_s": first_train, "first_eval_step_s": first_eval,
            "steady_train_step_s": steady}


def train_step_only(recipe_path, overrides=(), steps=3, jit_compile=False):
    """The ``separate`` train step (``--train-step-only``), in the recipe's precision.

    ``{"seconds": steady step, "first_step_seconds", "gflops": 3 x forward
    FLOPs x batch / step, "precision": the policy it ran in}``.
    """
    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.models.size import model_size

    recipe = load_recipe(recipe_path, overrides)
    policy = _configure(recipe)
    model, batch, _ = _model_and_batch(recipe)
    _compile(model, recipe, "separate", jit_compile)
    started = time.perf_counter()
    model.train_on_batch(*batch)
    first = time.perf_counter() - started
    seconds = median_seconds(lambda: model.train_on_batch(*batch), steps, warmup=0)
    flops = model_size(model)["full"]["flops"] * int(batch[0].shape[0])
    return {"seconds": seconds, "first_step_seconds": first, "precision": policy,
            "gflops": 3 * flops / seconds / 1e9}


def _configure(recipe):
    """Threads per op and the dtype policy, as ``fit`` sets them; returns the policy."""
    from keras_sdmtcnn.process.settings import choose_precision, configure_numerics

    configure_process(recipe)
    return configure_numerics(recipe.training, choose_precision(recipe)[0])


# The precisions bench compares, in fresh processes (``--set`` values).
COMPARED_PRECISIONS = ("none", "mixed_bfloat16")


def precision_figures(recipe, recipe_path, sets, steps, say):
    """The ``separate`` step and first step in float32 and in bfloat16, and auto's pick."""
    from keras_sdmtcnn.process.settings import choose_precision, native_bf16

    say("float32 and bfloat16 train steps, each in a fresh process ...")
    out = {"auto_picks": list(choose_precision(recipe)), "native_bf16": native_bf16()}
    for name in COMPARED_PRECISIONS:
        out[name] = _fresh_process("keras_sdmtcnn.bench", [
            "--recipe", recipe_path, *sets, f"--set=training.mixed_precision={name}",
            "--steps", str(steps), "--train-step-only"])
    f32, bf16 = out["none"], out["mixed_bfloat16"]
    out["speed_up"] = f32["seconds"] / bf16["seconds"]
    out["first_step_share"] = bf16["first_step_seconds"] / f32["first_step_seconds"]
    say(f"separate step: float32 {f32['seconds']:.3f} s ({f32['gflops']:.0f} GFLOP/s), "
        f"bfloat16 {bf16['seconds']:.3f} s ({bf16['gflops']:.0f} GFLOP/s): "
        f"{out['speed_up']:.2f}x; first step {f32['first_step_seconds']:.1f} / "
        f"{bf16['first_step_seconds']:.1f} s; auto picks {out['auto_picks'][0]} "
        f"({out['auto_picks'][1]})")
    return out


def bench(recipe_path, overrides=(), steps=3, quantizations=("none", "fp16", "int8"),
          latency_runs=5, verbose=1, compare_options=True):
    """Every figure of the module docstring; ``compare_options=False`` leaves out the
    XLA and allocator comparisons (three more processes, each building the model)."""
    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.data.datasets import pipeline_throughput
    from keras_sdmtcnn.process.settings import in_effect

    recipe = load_recipe(recipe_path, overrides)
    _configure(recipe)  # as fit would, before any op runs
    threads_per_op = in_effect()["intra_op_threads"]

    def say(text):
        if verbose:
            print(text, flush=True)

    out = {"recipe": recipe.name, "machine": machine(),
           "image_size": list(recipe.data.image_size), "batch_size": recipe.training.batch_size,
           "tasks": list(recipe.data.tasks), "intra_op_threads": threads_per_op}
    # First what runs in fresh processes, while this one holds no model: a
    # paper-size Teacher conversion and an XLA compilation each need many GB,
    # and the allocator comparison needs processes with their own heaps.
    _fresh_process_figures(out, recipe, recipe_path, [f"--set={o}" for o in overrides], steps,
                           quantizations, latency_runs, compare_options, verbose, say)
    say("start-up: time to the first train and evaluation steps ...")
    out["start_up"] = first_steps(recipe, steps)
    say(f"first train step {out['start_up']['first_train_step_s']:.1f} s, first evaluation "
        f"step {out['start_up']['first_eval_step_s']:.1f} s; steady train step "
        f"{out['start_up']['steady_train_step_s']:.3f} s")
    model, batch, datasets = _model_and_batch(recipe)
    _step_figures(out, model, recipe, batch, steps, say)
    _evaluation_figures(out, model, recipe, datasets, steps, say)
    out["input_pipeline_samples_per_s"] = pipeline_throughput(recipe, batches=20)
    say(f"input pipeline alone: {out['input_pipeline_samples_per_s']:.1f} samples/s")
    out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"peak memory of training and evaluation (max RSS): {out['peak_memory_mb']:.0f} MB")
    out["switches"] = in_effect()
    say(f"devices: {', '.join(out['machine']['devices'])}; switches in effect: "
        f"{_switches(out['switches'])}")
    return out


def _fresh_process_figures(out, recipe, recipe_path, sets, steps, quantizations, latency_runs,
                           compare_options, verbose, say):
    """Latency of every runtime; float32 against bfloat16; the allocator and XLA against
    the default step."""
    say("latency of every runtime (fresh process) ...")
    out["latency"] = _fresh_process(
        "keras_sdmtcnn.latency", ["--recipe", recipe_path, *sets, "--runs", str(latency_runs),
                                  "--all-runtimes", "--quantize", *quantizations],
        verbose=verbose)
    if not compare_options:
        return
    out["precision"] = precision_figures(recipe, recipe_path, sets, steps, say)
    step = ["--recipe", recipe_path, *sets, "--steps", str(steps), "--train-step-only"]
    default = _fresh_process("keras_sdmtcnn.bench", step)["seconds"]
    no_trim = _fresh_process("keras_sdmtcnn.bench", step, NO_TRIM_ALLOCATOR)["seconds"]
    xla = _fresh_process("keras_sdmtcnn.bench", [*step, "--xla"])["seconds"]
    out["allocator"] = {"env": NO_TRIM_ALLOCATOR, "default_seconds": default,
                        "no_trim_seconds": no_trim, "no_trim_over_default": no_trim / default}
    out["xla"] = {"separate_seconds": xla, "default_seconds": default,
                  "over_default": xla / default}
    say(f"separate step, each in a fresh process: default {default:.3f} s, glibc no trim "
        f"{no_trim:.3f} s ({no_trim / default:.2f}x), XLA {xla:.3f} s ({xla / default:.2f}x)")


def _step_figures(out, model, recipe, batch, steps, say):
    """Size and FLOPs; the train step of each objective; the step's convolution throughput."""
    from keras_sdmtcnn.models.size import model_size

    size = out["size"] = model_size(model)
    say(f"parameters: Teacher {size['teacher']['params']:,}, Student "
        f"{size['student']['params']:,}; GFLOPs: Teacher {size['teacher']['flops'] / 1e9:.1f}, "
        f"Student {size['student']['flops'] / 1e9:.1f}")
    samples = int(batch[0].shape[0])
    out["train_step"] = {}
    for name in ("teacher_only", "separate", "ensemble"):
        if name == "separate":
            seconds, reference = _step_and_reference(model, recipe, batch, name, steps)
        else:
            seconds = _step_seconds(model, recipe, batch, name, steps)
        out["train_step"][name] = {"seconds": seconds, "samples_per_s": samples / seconds}
        say(f"train step {name:<12} {seconds:8.3f} s  {samples / seconds:8.2f} samples/s")
    steps_ = out["train_step"]
    ratio = steps_["separate"]["seconds"] / steps_["teacher_only"]["seconds"]
    steps_["separate_over_teacher_only"] = ratio
    achieved = 3 * size["full"]["flops"] * samples / steps_["separate"]["seconds"] / 1e9
    out["conv_throughput"] = {"train_step_gflops": achieved, "single_conv_gflops": reference,
                              "share": achieved / reference}
    say(f"separate / teacher_only step: {ratio:.2f}x; conv throughput: train step "
        f"{achieved:.1f} GFLOP/s vs one 3x3 conv {reference:.1f} GFLOP/s "
        f"({achieved / reference:.0%})")


def _evaluation_figures(out, model, recipe, datasets, steps, say):
    _compile(model, recipe, "separate")
    val = datasets["val"].take(max(steps, 2)).cache()
    model.evaluate(val, verbose=0)  # warm-up and trace
    count = sum(int(x.shape[0]) for x, _ in val)
    seconds = median_seconds(lambda: model.evaluate(val, verbose=0), 1, warmup=0)
    out["evaluation_samples_per_s"] = count / seconds
    say(f"evaluation: {count / seconds:.2f} samples/s")


def _switches(switches):
    return ", ".join(f"{k} {v}" for k, v in sorted(switches.items()))


def _precision_rows(precision):
    """The table rows of :func:`precision_figures` (none when it did not run)."""
    if not precision:
        return []
    f32, bf16 = precision["none"], precision["mixed_bfloat16"]
    return [
        ("`separate` step, fresh process: float32 / mixed_bfloat16",
         f"{f32['seconds']:.3f} / {bf16['seconds']:.3f} s ({precision['speed_up']:.2f}x; "
         f"{f32['gflops']:.0f} / {bf16['gflops']:.0f} GFLOP/s)"),
        ("first train step, fresh process: float32 / mixed_bfloat16",
         f"{f32['first_step_seconds']:.1f} / {bf16['first_step_seconds']:.1f} s "
         f"({precision['first_step_share']:.0%})"),
        ("`training.mixed_precision: auto` picks",
         f"{precision['auto_picks'][0]} ({precision['auto_picks'][1]})"),
    ]


def table(result):
    """The figures as Markdown: a summary table, then the latency rows."""
    m, steps = result["machine"], result["train_step"]
    conv, size = result["conv_throughput"], result["size"]
    start = result["start_up"]
    rows = [
        ("time to first train step / first evaluation step (fit's model, fresh)",
         f"{start['first_train_step_s']:.1f} / {start['first_eval_step_s']:.1f} s "
         f"(steady train step {start['steady_train_step_s']:.3f} s)"),
        ("parameters, Teacher / Student / full",
         f"{size['teacher']['params']:,} / {size['student']['params']:,} / "
         f"{size['full']['params']:,}"),
        ("forward GFLOPs per image, Teacher / Student / full",
         f"{size['teacher']['flops'] / 1e9:.1f} / {size['student']['flops'] / 1e9:.1f} / "
         f"{size['full']['flops'] / 1e9:.1f}"),
        *[(f"train step `{name}`",
           f"{steps[name]['seconds']:.3f} s ({steps[name]['samples_per_s']:.2f} samples/s)")
          for name in ("teacher_only", "separate", "ensemble")],
        ("`separate` / `teacher_only`", f"{steps['separate_over_teacher_only']:.2f}x"),
        ("conv throughput: train step / one 3x3 conv (512 ch, 36x48)",
         f"{conv['train_step_gflops']:.0f} / {conv['single_conv_gflops']:.0f} GFLOP/s "
         f"({conv['share']:.0%})"),
        ("evaluation", f"{result['evaluation_samples_per_s']:.2f} samples/s"),
        ("input pipeline alone", f"{result['input_pipeline_samples_per_s']:.1f} samples/s"),
        ("peak memory (max RSS)", f"{result['peak_memory_mb']:.0f} MB"),
    ]
    rows += _precision_rows(result.get("precision"))
    if "xla" in result:
        rows += [
            ("XLA `separate` step", f"{result['xla']['separate_seconds']:.3f} s "
                                    f"({result['xla']['over_default']:.2f}x the default)"),
            ("`separate` step, fresh process: glibc default / no trim",
             f"{result['allocator']['default_seconds']:.3f} / "
             f"{result['allocator']['no_trim_seconds']:.3f} s "
             f"({result['allocator']['no_trim_over_default']:.2f}x)"),
        ]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, TF {m['tensorflow']}, Keras {m['keras']}",
             f"devices: {', '.join(m.get('devices', []))}; switches in effect: "
             f"{_switches(result.get('switches', {}))}",
             f"recipe {result['recipe']}: {result['tasks']} at {result['image_size']}, "
             f"batch {result['batch_size']}, threads per op "
             f"{result.get('intra_op_threads') or 'TensorFlow default'}", "",
             "| what | figure |", "|---|---|",
             *[f"| {what} | {figure} |" for what, figure in rows], "",
             "| latency (batch 1) | runtime | quantize | threads | ms |", "|---|---|---|---|---|"]
    for row in result["latency"]:
        threads = row["threads"] or "default"
        lines.append(f"| {row['branch']} | {row['runtime']} | {row['quantize']} | {threads} | "
                     f"{row['ms']:.1f} |")
    return "\n".join(lines) + "\n"
