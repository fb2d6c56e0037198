"""``python -m keras_sdmtcnn.fit RECIPE [--set k=v ...] [--run-dir DIR]``: train a model.

Builds the data, the model and the optimizer from a recipe, trains with a
progress bar, evaluates Teacher and Student on the validation split every
epoch (one line per epoch), and fills the run directory::

    RUN_DIR/recipe.yaml            the resolved recipe (written first)
    RUN_DIR/checkpoints/last.keras after every epoch
    RUN_DIR/checkpoints/best.keras the best epoch by output.monitor
    RUN_DIR/metrics.json           per-epoch logs (train and val)
    RUN_DIR/history.csv            the same as a table
    RUN_DIR/model.keras            the full model, at the end
    RUN_DIR/student.keras          the Student sub-model, at the end
    RUN_DIR/curves.png             training curves, at the end
    RUN_DIR/run.json               status: running | failed | complete

Every file is written atomically. ``run.json`` says ``complete`` only when
everything is written; a failed run says ``failed`` and why.
"""

import argparse
import json
import os
import time

from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError


def fit(recipe, run_dir=None, overwrite=False):
    """Trains the recipe's model; returns ``(model, history, run_dir)``.

    Args:
        recipe: a :class:`~keras_sdmtcnn.recipes.Recipe`.
        run_dir: where to write (default ``output.run_dir`` or ``runs/<name>``).
        overwrite: allow a run directory that already holds a finished run.
    """
    import keras

    from keras_sdmtcnn.builders import compiled_model
    from keras_sdmtcnn.callbacks import ProgressLogger, RunRecorder
    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.io import atomic_save_model, atomic_write_json
    from keras_sdmtcnn.recipes import save_recipe
    from keras_sdmtcnn.reporting import plot_curves

    run_dir = run_dir or recipe.output.run_dir or os.path.join("runs", recipe.name)
    status_path = os.path.join(run_dir, "run.json")
    if os.path.exists(status_path) and not overwrite:
        with open(status_path) as f:
            if json.load(f).get("status") == "complete":
                raise UserError(
                    f"{run_dir} already holds a finished run: choose another "
                    "--run-dir, or pass --overwrite to replace it."
                )
    os.makedirs(run_dir, exist_ok=True)
    for name in ("model.keras", "student.keras", "curves.png"):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
    save_recipe(recipe, os.path.join(run_dir, "recipe.yaml"))
    started = time.time()
    atomic_write_json(status_path, {"status": "running", "started": started,
                                    "seed": recipe.training.seed})
    try:
        keras.utils.set_random_seed(recipe.training.seed)
        if recipe.training.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        verbose = recipe.output.verbose
        datasets, info = build_datasets(recipe, verbose=bool(verbose))
        model = compiled_model(recipe, info.num_classes, info.ignore_label)
        tasks = list(recipe.data.tasks)
        steps = recipe.training.steps_per_epoch or -(-info.num_train // recipe.training.batch_size)
        recorder = RunRecorder(run_dir, recipe.output.monitor)
        if verbose:
            print(f"Training {recipe.name}: {info.num_train} train / {info.num_val} val "
                  f"samples from {info.root}; {model.count_params():,} parameters; "
                  f"run directory {run_dir}")
            for note in info.notes:
                print(f"  {note}")
        model.fit(
            datasets["train"].repeat() if recipe.training.steps_per_epoch else datasets["train"],
            validation_data=datasets["val"],
            epochs=recipe.training.epochs,
            steps_per_epoch=recipe.training.steps_per_epoch,
            validation_steps=recipe.training.validation_steps,
            callbacks=[recorder, ProgressLogger(tasks, recipe.training.epochs, steps, verbose)],
            shuffle=False,  # the training pipeline shuffles itself
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
    except Exception as e:
        import tensorflow as tf

        if isinstance(e, tf.errors.OpError):  # e.g. a PNG whose pixel data is corrupt
            e = UserError(
                f"Reading or training on the data failed: {e.message.splitlines()[0]} "
                f"A file under the dataset root is probably corrupt; check the files "
                f"of data.root ({recipe.data.root or 'the built-in scenes cache'})."
            )
        atomic_write_json(status_path, {
            "status": "failed", "started": started, "error": f"{type(e).__name__}: {e}",
        })
        raise e from None
    except BaseException as e:  # KeyboardInterrupt and friends: still not complete
        atomic_write_json(status_path, {
            "status": "failed", "started": started, "error": f"{type(e).__name__}: {e}",
        })
        raise
    atomic_write_json(status_path, {
        "status": "complete", "started": started, "seconds": time.time() - started,
        "seed": recipe.training.seed,
        "epochs": len(recorder.history),
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
                        help="replace a finished run in the run directory")
    args = parser.parse_args(argv)
    from keras_sdmtcnn.recipes import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    fit(recipe, args.run_dir, args.overwrite)


if __name__ == "__main__":
    cli.run(main)
