"""Training a recipe into a run directory: what ``python -m keras_sdmtcnn.fit`` calls.

:func:`fit` builds the data, the model and the optimizer from a recipe,
trains with a progress bar, evaluates Teacher and Student on the validation
split every epoch (one line per epoch), and fills the run directory (its
layout: ``runs/rundir.py``). Running it again on an unfinished run
directory resumes it; ``objective.frozen_teacher: train`` first trains
Baseline-3's Teacher into ``RUN_DIR/stage1_teacher``.
"""

import copy
import os
import time

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import COMPLETE, FAILED, RUNNING, RunDir, atomic_save_model


def _resume_state(run_dir, recipe, overwrite):
    """What a restarted command continues from, or ``None`` for a fresh start."""
    from keras_sdmtcnn.config import recipe_to_dict

    if overwrite:
        run_dir.clear_for_overwrite()
        return None
    if run_dir.is_complete():
        raise UserError(
            f"{run_dir.path} already holds a finished run: choose another --run-dir, or "
            "pass --overwrite to replace it."
        )
    state = run_dir.read_state()
    if state is None:
        return None
    previous = run_dir.recipe_dict()
    if previous is not None:
        changes = recipe_changes(previous, recipe_to_dict(recipe))
        if changes:
            raise UserError(
                f"{run_dir.path} holds an unfinished run of a different recipe: "
                f"{'; '.join(changes)}. To go on with it, resume with its own recipe "
                f"({run_dir.recipe_path}); otherwise choose another --run-dir, or pass "
                "--overwrite to start it afresh.")
    return state


# Sections that may change between a run's start and its resume: where
# output goes and how fast steps run do not change what is trained.
RESUMABLE_SECTIONS = ("output", "speed")


def recipe_changes(previous, current):
    """``["training.epochs was 10, now 20", ...]``: the keys whose values differ.

    ``previous`` is a run's saved recipe; keys it lacks (a recipe written by
    an older version) take their defaults, as they did then.
    """
    from keras_sdmtcnn.config import recipe_from_dict, recipe_to_dict

    try:
        previous = recipe_to_dict(recipe_from_dict(previous))
    except UserError:
        pass

    def flat(values, prefix=""):
        out = {}
        for key, value in values.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and key not in ("task_weights", "feature_teachers",
                                                       "feature_weights"):
                out.update(flat(value, f"{path}."))
            else:
                out[path] = value
        return out

    old, new = flat(previous), flat(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in RESUMABLE_SECTIONS or old.get(key) == new.get(key):
            continue
        changes.append(f"{key} was {old.get(key)!r}, now {new.get(key)!r}")
    return changes


def check_teachers(recipe):
    """Checks the frozen-teacher runs a recipe names, before anything else runs."""
    from keras_sdmtcnn.runs.teachers import check_feature_teachers, check_frozen_teacher

    if recipe.objective.frozen_teacher not in (None, "train"):
        check_frozen_teacher(recipe, recipe.objective.frozen_teacher)
    if recipe.objective.feature_teachers:
        check_feature_teachers(recipe)


def stage1_recipe(recipe):
    """Baseline-3's first stage: the same recipe, training the Teacher alone."""
    stage1 = copy.deepcopy(recipe)
    stage1.name = f"{recipe.name}_stage1_teacher"
    stage1.objective.name = "teacher_only"
    stage1.objective.frozen_teacher = None
    stage1.output.run_dir = None
    return stage1


def _train_stage1(recipe, run_dir, overwrite):
    stage1 = run_dir.stage1()
    done = stage1.is_complete() and not overwrite
    if recipe.output.verbose:
        print(f"Stage 1 of 2: the Teacher alone, in {stage1.path}"
              + (" (finished earlier)" if done else ""))
    if not done:
        fit(stage1_recipe(recipe), stage1.path, overwrite)
        import keras

        keras.backend.clear_session()
    if recipe.output.verbose:
        print(f"Stage 2 of 2: a Student from scratch, distilled from the frozen Teacher of "
              f"{stage1.path}")
    return stage1.path


def nonfinite_message(recorder, run_dir):
    """What a NaN/Inf stop says: the term, the checkpoint that exists, advice for the cause."""
    state = run_dir.read_state()
    if state is not None:
        where = (f"The last good checkpoint (epoch {state['epoch']}) is {state['path']}; "
                 "running the command again resumes from it.")
    else:
        where = "No epoch had finished, so there is no checkpoint."
    if recorder.finite_before:
        advice = ("It was finite at earlier steps: either a file met now holds NaN or Inf "
                  "(check with `python -m keras_sdmtcnn.data check`), or training diverged: "
                  "then lower training.learning_rate.")
    else:
        advice = ("It was never finite, so the inputs are likely at fault: run "
                  "`python -m keras_sdmtcnn.data check` on the dataset and check the "
                  "targets of that task for NaN or Inf.")
    return (f"Training stopped: the loss term {recorder.bad_term!r} became NaN or Inf. "
            f"{where} {advice}")


def logged_names(model):
    """Every value ``fit`` logs per epoch for ``model``: loss terms and validation metrics."""
    from keras_sdmtcnn.tasks import get_task, log_key

    terms = list(model.objective.term_names(model.tasks)) + list(model.extra_term_names())
    names = terms + [f"val_{t}" for t in terms]
    for task in model.tasks:
        for branch in model.branches:
            names += [log_key(task, branch, m, "val") for m in get_task(task).metric_keys]
    return names


def check_monitor(monitor, model):
    """``output.monitor`` must be a value the run logs; the closest one is suggested."""
    import difflib

    names = logged_names(model)
    if monitor not in names:
        close = difflib.get_close_matches(monitor, names, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise UserError(
            f"output.monitor is {monitor!r}, which this run does not log, so no checkpoint "
            f"would be chosen by it.{hint} It logs: {', '.join(sorted(names))}.")


def fit(recipe, run_dir=None, overwrite=False):
    """Trains the recipe's model; returns ``(model, history, run_dir)``.

    One process at a time writes a run directory (``RunDir.lock``); the
    temporary files a killed process left there are removed first. See
    :func:`_fit` for what is trained and written.
    """
    run_dir = RunDir(run_dir or recipe.output.run_dir or os.path.join("runs", recipe.name))
    with run_dir.lock():
        run_dir.remove_temporaries()
        return _fit(recipe, run_dir, overwrite)


def _fit(recipe, run_dir, overwrite):
    """Trains the recipe's model into ``run_dir`` (held by this process).

    Started again with the same run directory after an interruption (a
    crash, a SIGKILL, a preempted machine), it resumes from the last finished
    epoch: weights, optimizer state, epoch counter, records, and the data
    order and augmentation of the remaining epochs.

    Args:
        recipe: a :class:`~keras_sdmtcnn.config.Recipe`.
        run_dir: a :class:`RunDir`.
        overwrite: start afresh even if the run directory holds a run.
    """
    training, verbose = recipe.training, recipe.output.verbose
    # The cheap refusals (a finished run, a different recipe) before TensorFlow loads.
    state = _resume_state(run_dir, recipe, overwrite)
    check_teachers(recipe)

    import keras

    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.models.builders import apply_speed, compiled_model, configure_process
    from keras_sdmtcnn.models.saving import load_model
    from keras_sdmtcnn.runs.reporting import plot_curves
    from keras_sdmtcnn.training import distribute
    from keras_sdmtcnn.training.callbacks import (
        EpochTensorBoard,
        PanelSummary,
        ProgressLogger,
        RunRecorder,
    )

    threads_per_op = configure_process(recipe)  # before TensorFlow's first op
    teacher_runs = None
    if recipe.objective.frozen_teacher == "train":
        teacher_runs = {"frozen_teacher": _train_stage1(recipe, run_dir, overwrite)}
    run_dir.remove_final_files()
    run_dir.save_recipe(recipe)
    started = time.time()
    run_dir.write_status(RUNNING, started=started, seed=training.seed)
    try:
        strategy = distribute.make_strategy(training.distribute, training.cpu_replicas)
        replicas = strategy.num_replicas_in_sync
        if training.batch_size % replicas:
            raise UserError(
                f"training.batch_size {training.batch_size} is the global batch and must "
                f"divide evenly across the {replicas} replicas."
            )
        keras.utils.set_random_seed(training.seed)
        if training.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        distribute.set_precision(training.mixed_precision)
        initial_epoch, history, best = 0, [], None
        if state is not None:
            initial_epoch, best = state["epoch"], state["best"]
            history = run_dir.read_history()[:initial_epoch]
        datasets, info = build_datasets(recipe, verbose=bool(verbose),
                                        initial_epoch=initial_epoch)
        with strategy.scope():
            if state is not None:
                model = load_model(state["path"])
                apply_speed(model, recipe.speed)
            else:
                model = compiled_model(recipe, info.num_classes, info.ignore_label, replicas,
                                       teacher_runs)
        tasks = list(recipe.data.tasks)
        check_monitor(recipe.output.monitor, model)
        recorder = RunRecorder(run_dir, recipe.output.monitor, history, best)
        callbacks = [recorder, ProgressLogger(tasks, training.epochs, info.steps_per_epoch,
                                              verbose)]
        if recipe.output.tensorboard:
            callbacks.append(EpochTensorBoard(run_dir.tensorboard, write_graph=False))
            if recipe.output.panels_every:
                images = next(iter(datasets["val"]))[0].numpy()[:3]
                callbacks.append(PanelSummary(run_dir.tensorboard, images, tasks,
                                              recipe.output.panels_every,
                                              recipe.data.image_normalization))
        if verbose:
            where = f"resuming after epoch {initial_epoch}" if state else "run directory"
            print(f"Training {recipe.name}: {info.num_train} train / {info.num_val} val "
                  f"samples from {info.root}; {model.count_params():,} parameters; "
                  f"{replicas} replica(s); {where} {run_dir.path}")
            for note in info.notes:
                print(f"  {note}")
        if initial_epoch < training.epochs:
            model.fit(
                datasets["train"],
                validation_data=datasets["val"],
                epochs=training.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=info.steps_per_epoch,
                validation_steps=training.validation_steps,
                callbacks=callbacks,
                verbose=0,
            )
        if recorder.bad_term is not None:
            raise UserError(nonfinite_message(recorder, run_dir))
        atomic_save_model(model, run_dir.model_path)
        atomic_save_model(model.student_model(), run_dir.student_path)
        plot_curves(recorder.history, tasks, run_dir.file(RunDir.CURVES))
    except BaseException as e:  # a KeyboardInterrupt too: the run is not complete
        import tensorflow as tf

        from keras_sdmtcnn.data.values import bad_file

        found = bad_file(e.message) if isinstance(e, tf.errors.OpError) else None
        if found:  # a value check of data/values.py, met while reading
            fmt = recipe.data.format
            e = UserError(
                f"{found[0]}: {found[1]}. Fix or remove that file, then run fit again (it "
                f"resumes); `python -m keras_sdmtcnn.data check {recipe.data.root} --format "
                f"{fmt}` lists every bad file.")
        elif isinstance(e, tf.errors.OpError):  # e.g. a PNG whose pixel data is corrupt
            e = UserError(
                f"Reading or training on the data failed: {e.message.splitlines()[0]} "
                f"A file under the dataset root is probably corrupt; check the files "
                f"of data.root ({recipe.data.root or 'the built-in scenes cache'})."
            )
        run_dir.write_status(FAILED, started=started, seed=training.seed,
                             error=f"{type(e).__name__}: {e}")
        raise e from None
    run_dir.write_status(
        COMPLETE, started=started, seconds=time.time() - started, seed=training.seed,
        intra_op_threads=threads_per_op, epochs=len(recorder.history),
        final=recorder.history[-1] if recorder.history else {})
    if verbose:
        print(f"Done in {time.time() - started:.0f} s. Run directory: {run_dir.path}")
    return model, recorder.history, run_dir.path
