"""``python -m keras_sdmtcnn.fit RECIPE [--set k=v ...] [--run-dir DIR]``: train a model.

Builds the data, the model and the optimizer from a recipe, trains with a
progress bar, evaluates Teacher and Student on the validation split every
epoch (one line per epoch), and fills the run directory::

    RUN_DIR/recipe.yaml            the resolved recipe (written first)
    RUN_DIR/checkpoints/last.keras after every epoch (with state.json: resume point)
    RUN_DIR/checkpoints/best.keras the best epoch by output.monitor
    RUN_DIR/tensorboard/           every loss term and metric; prediction panels
    RUN_DIR/metrics.json           per-epoch logs (train and val)
    RUN_DIR/history.csv            the same as a table
    RUN_DIR/model.keras            the full model, at the end
    RUN_DIR/student.keras          the Student sub-model, at the end
    RUN_DIR/curves.png             training curves, at the end
    RUN_DIR/run.json               status: running | failed | complete
    RUN_DIR/stage1_teacher/        with objective.frozen_teacher: train, the
                                   stage-1 Teacher run (the same layout)

Every file is written atomically. ``run.json`` says ``complete`` only when
everything is written; a failed run says ``failed`` and why. Running the same
command again on an unfinished run directory resumes it.
"""

import argparse
import json
import os
import shutil
import time

import yaml

from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError


def _resume_state(run_dir, recipe, overwrite):
    """What a restarted command continues from, or ``None`` for a fresh start."""
    from keras_sdmtcnn.callbacks import read_state
    from keras_sdmtcnn.recipes import recipe_to_dict

    status_path = os.path.join(run_dir, "run.json")
    status = {}
    if os.path.exists(status_path):
        with open(status_path) as f:
            status = json.load(f)
    if overwrite:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
        return None
    if status.get("status") == "complete":
        raise UserError(
            f"{run_dir} already holds a finished run: choose another --run-dir, or "
            "pass --overwrite to replace it."
        )
    state = read_state(run_dir)
    if state is None:
        return None
    saved = os.path.join(run_dir, "recipe.yaml")
    if os.path.exists(saved):
        with open(saved) as f:
            previous = yaml.safe_load(f)
        current = recipe_to_dict(recipe)
        if {k: v for k, v in previous.items() if k != "output"} != {
                k: v for k, v in current.items() if k != "output"}:
            raise UserError(
                f"{run_dir} holds an unfinished run of a different recipe: resume it with "
                "the same recipe, choose another --run-dir, or pass --overwrite."
            )
    return state


def check_teachers(recipe):
    """Checks the frozen-teacher runs a recipe names, before anything else runs."""
    from keras_sdmtcnn.teachers import check_feature_teachers, check_frozen_teacher

    if recipe.objective.frozen_teacher not in (None, "train"):
        check_frozen_teacher(recipe, recipe.objective.frozen_teacher)
    if recipe.objective.feature_teachers:
        check_feature_teachers(recipe)


def stage1_recipe(recipe):
    """Baseline-3's first stage: the same recipe, training the Teacher alone."""
    import copy

    stage1 = copy.deepcopy(recipe)
    stage1.name = f"{recipe.name}_stage1_teacher"
    stage1.objective.name = "teacher_only"
    stage1.objective.frozen_teacher = None
    stage1.output.run_dir = None
    return stage1


def _train_stage1(recipe, run_dir, overwrite):
    stage1_dir = os.path.join(run_dir, "stage1_teacher")
    status_path = os.path.join(stage1_dir, "run.json")
    done = False
    if os.path.exists(status_path) and not overwrite:
        with open(status_path) as f:
            done = json.load(f).get("status") == "complete"
    if recipe.output.verbose:
        print(f"Stage 1 of 2: the Teacher alone, in {stage1_dir}"
              + (" (finished earlier)" if done else ""))
    if not done:
        fit(stage1_recipe(recipe), stage1_dir, overwrite)
        import keras

        keras.backend.clear_session()
    if recipe.output.verbose:
        print(f"Stage 2 of 2: a Student from scratch, distilled from the frozen Teacher of "
              f"{stage1_dir}")
    return stage1_dir


def fit(recipe, run_dir=None, overwrite=False):
    """Trains the recipe's model; returns ``(model, history, run_dir)``.

    Started again with the same run directory after an interruption (a
    crash, a SIGKILL, a preempted machine), it resumes from the last finished
    epoch: weights, optimizer state, epoch counter, records, and the data
    order and augmentation of the remaining epochs.

    Args:
        recipe: a :class:`~keras_sdmtcnn.recipes.Recipe`.
        run_dir: where to write (default ``output.run_dir`` or ``runs/<name>``).
        overwrite: start afresh even if the run directory holds a run.
    """
    import keras

    from keras_sdmtcnn import distribute
    from keras_sdmtcnn.builders import compiled_model
    from keras_sdmtcnn.callbacks import PanelSummary, ProgressLogger, RunRecorder
    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.io import atomic_save_model, atomic_write_json
    from keras_sdmtcnn.recipes import save_recipe
    from keras_sdmtcnn.reporting import plot_curves

    training, verbose = recipe.training, recipe.output.verbose
    run_dir = run_dir or recipe.output.run_dir or os.path.join("runs", recipe.name)
    status_path = os.path.join(run_dir, "run.json")
    os.makedirs(run_dir, exist_ok=True)
    state = _resume_state(run_dir, recipe, overwrite)
    check_teachers(recipe)
    teacher_runs = None
    if recipe.objective.frozen_teacher == "train":
        teacher_runs = {"frozen_teacher": _train_stage1(recipe, run_dir, overwrite)}
    for name in ("model.keras", "student.keras", "curves.png"):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    save_recipe(recipe, os.path.join(run_dir, "recipe.yaml"))
    started = time.time()
    atomic_write_json(status_path, {"status": "running", "started": started,
                                    "seed": training.seed})
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
            with open(os.path.join(run_dir, "metrics.json")) as f:
                history = json.load(f)[:initial_epoch]
        datasets, info = build_datasets(recipe, verbose=bool(verbose),
                                        initial_epoch=initial_epoch)
        with strategy.scope():
            if state is not None:
                import keras_sdmtcnn.registry  # noqa: F401  (registers the classes)

                model = keras.models.load_model(state["path"])
            else:
                model = compiled_model(recipe, info.num_classes, info.ignore_label, replicas,
                                       teacher_runs)
        tasks = list(recipe.data.tasks)
        recorder = RunRecorder(run_dir, recipe.output.monitor, history, best)
        callbacks = [recorder, ProgressLogger(tasks, training.epochs, info.steps_per_epoch,
                                              verbose)]
        if recipe.output.tensorboard:
            logs = os.path.join(run_dir, "tensorboard")
            callbacks.append(keras.callbacks.TensorBoard(logs, write_graph=False))
            if recipe.output.panels_every:
                images = next(iter(datasets["val"]))[0].numpy()[:3]
                callbacks.append(PanelSummary(logs, images, tasks, recipe.output.panels_every))
        if verbose:
            where = f"resuming after epoch {initial_epoch}" if state else "run directory"
            print(f"Training {recipe.name}: {info.num_train} train / {info.num_val} val "
                  f"samples from {info.root}; {model.count_params():,} parameters; "
                  f"{replicas} replica(s); {where} {run_dir}")
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
            raise UserError(
                f"Training stopped: the loss term {recorder.bad_term!r} became NaN or "
                f"Inf. The last good checkpoint is {run_dir}/checkpoints/last.keras. "
                "Lower training.learning_rate or check the data of that task."
            )
        atomic_save_model(model, os.path.join(run_dir, "model.keras"))
        atomic_save_model(model.student_model(), os.path.join(run_dir, "student.keras"))
        plot_curves(recorder.history, tasks, os.path.join(run_dir, "curves.png"))
    except BaseException as e:  # a KeyboardInterrupt too: the run is not complete
        import tensorflow as tf

        if isinstance(e, tf.errors.OpError):  # e.g. a PNG whose pixel data is corrupt
            e = UserError(
                f"Reading or training on the data failed: {e.message.splitlines()[0]} "
                f"A file under the dataset root is probably corrupt; check the files "
                f"of data.root ({recipe.data.root or 'the built-in scenes cache'})."
            )
        atomic_write_json(status_path, {
            "status": "failed", "started": started, "seed": training.seed,
            "error": f"{type(e).__name__}: {e}",
        })
        raise e from None
    atomic_write_json(status_path, {
        "status": "complete", "started": started, "seconds": time.time() - started,
        "seed": training.seed, "epochs": len(recorder.history),
        "final": recorder.history[-1] if recorder.history else {},
    })
    if verbose:
        print(f"Done in {time.time() - started:.0f} s. Run directory: {run_dir}")
    return model, recorder.history, run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.fit", description="Train an SD-MTCNN from a recipe."
    )
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/synthetic.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set training.epochs=3")
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if the run directory holds a run")
    args = parser.parse_args(argv)
    from keras_sdmtcnn.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    fit(recipe, args.run_dir, args.overwrite)


if __name__ == "__main__":
    cli.run(main)
