"""Training a recipe into a run directory: what ``python -m keras_sdmtcnn.fit`` calls.

:func:`fit` builds the data, the model and the optimizer from a recipe,
trains with a progress bar, evaluates Teacher and Student on the validation
split every epoch (one line per epoch), and fills the run directory (its
layout: ``runs/rundir.py``). Running it again on an unfinished run
directory resumes it; ``objective.stage1_network: train`` first trains
Baseline-3's stage-1 network into ``RUN_DIR/stage1_teacher``. ``--overwrite``
trains the new run beside the old one and puts it in place only once it is
complete.

With ``training.distribute: multi_worker`` every worker runs the same
command (``TF_CONFIG`` says which it is): the chief alone writes the run
directory; the others write nothing, start from the chief's resume point
and weights, and all of them end together (``training/distribute.py``).
"""

import copy
import os
import time

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.process.cluster import read_cluster
from keras_sdmtcnn.process.settings import choose_precision
from keras_sdmtcnn.runs.pretrained import check_pretrained
from keras_sdmtcnn.runs.rundir import COMPLETE, FAILED, RUNNING, RunDir, atomic_save_model


def default_run_dir(recipe, run_dir=None):
    """``--run-dir``, else the recipe's ``output.run_dir``, else ``runs/<recipe name>``."""
    return run_dir or recipe.output.run_dir or os.path.join("runs", recipe.name)


def _resume_state(run_dir, recipe, overwrite):
    """What a restarted command continues from, or ``None`` for a fresh start."""
    from keras_sdmtcnn.config import recipe_to_dict

    if overwrite:
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


def started_precision(run_dir, state):
    """The dtype policy the run being resumed (``state``) trained in, else ``None``.

    ``run.json`` records it; a run started by 0.2 or earlier has only its
    recipe's explicit ``training.mixed_precision`` (``none``: float32).
    """
    if state is None:
        return None
    recorded = run_dir.status().get("precision")
    if recorded:
        return recorded
    training = (run_dir.recipe_dict() or {}).get("training") or {}
    previous = training.get("mixed_precision", "none")
    return "float32" if previous == "none" else previous if previous != "auto" else None


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
            if isinstance(value, dict) and key not in ("task_weights", "experts",
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
        if key == "training.mixed_precision":  # checked by the policy it resolves to
            continue
        changes.append(f"{key} was {old.get(key)!r}, now {new.get(key)!r}")
    return changes


def stage1_recipe(recipe):
    """Baseline-3's first stage: the same recipe, training the Teacher alone."""
    stage1 = copy.deepcopy(recipe)
    stage1.name = f"{recipe.name}_stage1_teacher"
    stage1.objective.name = "teacher_only"
    stage1.objective.stage1_network = None
    stage1.output.run_dir = None
    return stage1


def nonfinite_message(recorder, run_dir):
    """What a NaN/Inf stop says: the term, the checkpoint that exists, advice for the cause."""
    state = run_dir.read_state() if run_dir is not None else None
    if run_dir is None:
        where = "The chief's run directory keeps its last good checkpoint."
    elif state is not None:
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

    terms = model.logged_terms()
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
    temporary files a killed process left there are removed first. Started
    again with the same run directory after an interruption (a crash, a
    SIGKILL, a preempted machine), it resumes from the last finished epoch:
    weights, optimizer state, epoch counter, records, and the data order
    and augmentation of the remaining epochs.

    Args:
        recipe: a :class:`~keras_sdmtcnn.config.Recipe`.
        run_dir: the run directory (default: :func:`default_run_dir`).
        overwrite: replace what the run directory holds. The old run stays
            in place, whole, until the new one is complete.
    """
    run_dir = RunDir(default_run_dir(recipe, run_dir))
    cluster = read_cluster() if recipe.training.distribute == "multi_worker" else None
    job = _Training(recipe, cluster)
    if cluster is not None and not cluster.is_chief:
        print(f"{cluster.name()}: the chief, {cluster.chief_name}, writes the run directory; "
              "this worker writes nothing.")
        model, history = job.run(None, None, overwrite)  # in the chief's precision
        return model, history, None
    note = f", {cluster.name()} of {cluster.identity()}" if cluster else ""
    try:
        with run_dir.lock(note):
            run_dir.remove_temporaries()
            # The cheap refusals (a finished run, a different recipe) before TensorFlow loads.
            state = _resume_state(run_dir, recipe, overwrite)
            job.precision = choose_precision(recipe, started_precision(run_dir, state))
            check_pretrained(recipe)
            target = run_dir.staging() if overwrite and run_dir.has_run() else run_dir
            try:
                model, history = job.run(target, state, overwrite)
            except BaseException:
                if target is not run_dir:  # the old run stays; the new one never finished
                    target.remove()
                raise
            if target is not run_dir:
                run_dir.replace_with(target)
    except UserError as e:
        job.refuse(e)  # the other workers stop with it
        raise
    if recipe.output.verbose:
        print(f"Run directory: {run_dir.path}")
    return model, history, run_dir.path


class _Training:
    """One training of a recipe, as a short list of named steps (:meth:`run`).

    The same steps serve a single process, the chief of a multi-worker job
    (``cluster``) and its other workers (``run_dir=None``: they write
    nothing); Baseline-3's first stage runs them with the same strategy.
    """

    def __init__(self, recipe, cluster, strategy=None, stage=""):
        self.recipe, self.cluster, self.strategy, self.stage = recipe, cluster, strategy, stage
        self.threads_per_op = None
        self.precision = None  # (policy, why) from choose_precision; a non-chief: the chief's
        self.agreed = False

    @property
    def writes(self):
        return self.cluster is None or self.cluster.is_chief

    def run(self, run_dir, state, overwrite):
        """Trains into ``run_dir`` from ``state`` (a resume point); returns ``(model, history)``."""
        recipe, training = self.recipe, self.recipe.training
        self.connect()
        pretrained = self.first_stage(run_dir, overwrite)
        verdict = self.agree({"initial_epoch": state["epoch"] if state else 0,
                              "pretrained": pretrained, "precision": self.precision})
        initial_epoch, pretrained = verdict["initial_epoch"], verdict["pretrained"]
        self.precision = tuple(verdict["precision"])
        started = time.time()
        precision = self.precision[0]
        if run_dir is not None:
            run_dir.remove_final_files()
            run_dir.save_recipe(recipe)
            run_dir.write_status(RUNNING, started=started, seed=training.seed,
                                 precision=precision)
        try:
            datasets, info = self.data(initial_epoch)
            model = self.model(info, state, initial_epoch, pretrained)
            recorder = self.train(model, datasets, info, run_dir, state, initial_epoch)
            if run_dir is not None:
                self.save(model, recorder, run_dir)
        except BaseException as e:  # a KeyboardInterrupt too: the run is not complete
            e = self.explain(e)
            if run_dir is not None:
                run_dir.write_status(FAILED, started=started, seed=training.seed,
                                     precision=precision, error=f"{type(e).__name__}: {e}")
            raise e from None
        self.finish()
        if run_dir is not None:
            run_dir.write_status(
                COMPLETE, started=started, seconds=time.time() - started, seed=training.seed,
                precision=precision, intra_op_threads=self.threads_per_op,
                epochs=len(recorder.history),
                final=recorder.history[-1] if recorder.history else {})
        if recipe.output.verbose:
            print(f"Done in {time.time() - started:.0f} s.")
        return model, recorder.history

    # === The steps ===

    def connect(self):
        """The process settings, then the strategy (a multi-worker job waits for its peers)."""
        if self.strategy is not None:
            return
        from keras_sdmtcnn.process.settings import configure_process
        from keras_sdmtcnn.training import distribute

        self.threads_per_op = configure_process(self.recipe)  # before TensorFlow's first op
        distribute.check_batch(self.recipe.training, self.cluster)  # before any wait on a peer
        self.strategy = distribute.make_strategy(self.recipe.training, self.cluster)

    def first_stage(self, run_dir, overwrite):
        """Baseline-3's stage-1 network, trained first (``objective.stage1_network: train``)."""
        if self.recipe.objective.stage1_network != "train":
            return None
        import keras

        verbose = self.recipe.output.verbose
        stage1 = run_dir.stage1() if run_dir is not None else None
        done = stage1 is not None and stage1.is_complete() and not overwrite
        if verbose and stage1 is not None:
            print(f"Stage 1 of 2: the Teacher alone, in {stage1.path}"
                  + (" (finished earlier)" if done else ""))
        first = _Training(stage1_recipe(self.recipe), self.cluster, self.strategy, "/stage1")
        first.threads_per_op = self.threads_per_op
        verdict = first.agree({"done": done})
        if not verdict["done"]:
            if stage1 is None:
                first.run(None, None, overwrite)
            else:
                with stage1.lock():
                    stage1.remove_temporaries()
                    state = _resume_state(stage1, first.recipe, overwrite)
                    first.precision = choose_precision(first.recipe,
                                                       started_precision(stage1, state))
                    first.run(stage1, state, overwrite)
            keras.backend.clear_session()
        if verbose and stage1 is not None:
            print(f"Stage 2 of 2: a Student from scratch, distilled from the frozen Teacher of "
                  f"{stage1.path}")
        return {"stage1_network": stage1.path if stage1 is not None else None}

    def agree(self, verdict):
        """The chief's ``verdict`` on every worker (a single process keeps its own)."""
        if self.cluster is None:
            return verdict
        from keras_sdmtcnn.training.distribute import start_together

        self.agreed = True
        return start_together(self.cluster, verdict, self.recipe.training.peer_timeout,
                              self.stage)

    def refuse(self, error):
        """A chief that cannot start tells the other workers why before it stops."""
        if self.cluster is None or not self.cluster.is_chief or self.agreed:
            return
        try:
            self.connect()
            self.agree({"error": str(error)})
        except UserError:
            pass

    def data(self, initial_epoch):
        """The seed and the numeric policy of this stage, then its datasets."""
        import keras

        from keras_sdmtcnn.data.datasets import build_datasets
        from keras_sdmtcnn.process.settings import configure_numerics

        keras.utils.set_random_seed(self.recipe.training.seed)
        configure_numerics(self.recipe.training, self.precision[0])
        return build_datasets(self.recipe, verbose=bool(self.recipe.output.verbose),
                              initial_epoch=initial_epoch)

    def model(self, info, state, initial_epoch, pretrained):
        """The recipe's model, compiled; resumed from the chief's checkpoint when there is one.

        A resumed model is built as a fresh one is (so its optimizer has the
        same variables) and then takes the checkpoint's weights and
        optimizer state; every other worker then takes the chief's.
        """
        from keras_sdmtcnn.training.builders import compiled_model
        from keras_sdmtcnn.training.distribute import broadcast_from_chief
        from keras_sdmtcnn.training.saving import load_checkpoint

        def build():
            model = compiled_model(self.recipe, info.num_classes, info.ignore_label,
                                   self.strategy.num_replicas_in_sync, pretrained)
            if initial_epoch:
                model.optimizer.build(model.trainable_variables)
            return model

        with self.strategy.scope():
            model = build()
        if initial_epoch and self.cluster is None:
            load_checkpoint(model, state["path"])
        elif initial_epoch:
            # The chief reads its checkpoint into a model of its own, outside the
            # strategy (an assignment to a variable of the job on one worker alone
            # would wait for the others), and every worker takes its values.
            values = None
            if state is not None:
                plain = build()
                load_checkpoint(plain, state["path"])
                values = [v.numpy() for v in _state_variables(plain)]
            broadcast_from_chief(self.strategy, self.cluster, _state_variables(model), values)
        check_monitor(self.recipe.output.monitor, model)
        return model

    def train(self, model, datasets, info, run_dir, state, initial_epoch):
        """``model.fit`` with the run's callbacks; returns the records' callback."""
        from keras_sdmtcnn.training.callbacks import RunRecorder

        recipe, training = self.recipe, self.recipe.training
        history = run_dir.read_history()[:initial_epoch] if state is not None else []
        recorder = RunRecorder(run_dir, recipe.output.monitor, history,
                               state["best"] if state is not None else None)
        self.say_what(model, info, run_dir, initial_epoch)
        if initial_epoch < training.epochs:
            model.fit(datasets["train"], validation_data=datasets["val"],
                      epochs=training.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=info.steps_per_epoch,
                      validation_steps=training.validation_steps,
                      callbacks=[recorder, *self.callbacks(datasets, info, run_dir)],
                      verbose=0, shuffle=False)
        if recorder.bad_term is not None:
            raise UserError(nonfinite_message(recorder, run_dir))
        return recorder

    def callbacks(self, datasets, info, run_dir):
        """Progress on every worker; TensorBoard and its panels where the run is written."""
        from keras_sdmtcnn.training.callbacks import EpochTensorBoard, PanelSummary, ProgressLogger

        recipe, tasks = self.recipe, list(self.recipe.data.tasks)
        callbacks = [ProgressLogger(tasks, recipe.training.epochs, info.steps_per_epoch,
                                    recipe.output.verbose)]
        if run_dir is not None and recipe.output.tensorboard:
            callbacks.append(EpochTensorBoard(run_dir.tensorboard, write_graph=False))
            if recipe.output.panels_every:
                images = next(iter(datasets["val"]))[0].numpy()[:3]
                callbacks.append(PanelSummary(run_dir.tensorboard, images, tasks,
                                              recipe.output.panels_every,
                                              recipe.data.image_normalization))
        return callbacks

    def say_what(self, model, info, run_dir, initial_epoch):
        if not self.recipe.output.verbose:
            return
        replicas = self.strategy.num_replicas_in_sync
        where = ("the chief's run directory" if run_dir is None else
                 f"replacing the run in {run_dir.replaces} when complete" if run_dir.replaces
                 else f"resuming after epoch {initial_epoch} in {run_dir.path}" if initial_epoch
                 else f"run directory {run_dir.path}")
        policy, why = self.precision
        print(f"Training {self.recipe.name}: {info.num_train} train / {info.num_val} val "
              f"samples from {info.root}; {model.count_params():,} parameters; "
              f"{replicas} replica(s); {policy} ({why}); {where}")
        for note in info.notes:
            print(f"  {note}")

    def save(self, model, recorder, run_dir):
        """The final files: the full model, the Student, the curves."""
        from keras_sdmtcnn.runs.reporting import plot_curves

        atomic_save_model(model, run_dir.model_path)
        atomic_save_model(model.student_model(), run_dir.student_path)
        plot_curves(recorder.history, list(self.recipe.data.tasks),
                    run_dir.file(RunDir.CURVES))

    def finish(self):
        """Every worker waits until all are done, so that none leaves while another works."""
        if self.cluster is not None:
            from keras_sdmtcnn.training.distribute import finish_together

            finish_together(self.cluster, self.recipe.training.peer_timeout, self.stage)

    def explain(self, error):
        """What a failure was, as one line for the user where it can be told."""
        return explain_failure(error, self.recipe, self.cluster)


def _state_variables(model):
    """The variables a checkpoint restores: the model's and its optimizer's, in order."""
    return list(model.weights) + list(model.optimizer.variables)


def explain_failure(error, recipe, cluster=None):
    """``error`` as a :class:`UserError` that says what happened, where that can be told.

    A failed value check names the file; a file that cannot be decoded names
    the dataset root; running out of memory says so, with the batch, the
    image size and the device; a lost worker is named. Other runtime errors
    are reported as what they are. Anything else is returned as it was.
    """
    if isinstance(error, (UserError, KeyboardInterrupt)):
        return error
    import tensorflow as tf

    from keras_sdmtcnn.data.values import bad_file, file_error
    from keras_sdmtcnn.training.distribute import lost_task

    first = str(getattr(error, "message", error)).strip().splitlines()
    first = first[0] if first else type(error).__name__
    lost = lost_task(error, cluster)
    if lost is not None:
        return UserError(
            f"{lost} stopped answering while training; every worker stops. Run the same "
            "command again on every worker: the run resumes from the chief's last checkpoint.")
    if isinstance(error, (tf.errors.ResourceExhaustedError, MemoryError)):
        return UserError(out_of_memory_message(recipe, first))
    if not isinstance(error, tf.errors.OpError):
        return error
    found = bad_file(error.message)
    if found:  # a value check of data/values.py, met while reading
        return UserError(
            f"{found[0]}: {found[1]}. Fix or remove that file, then run fit again (it "
            f"resumes); `python -m keras_sdmtcnn.data check {recipe.data.root} --format "
            f"{recipe.data.format}` lists every bad file.")
    if file_error(error.message):  # e.g. a PNG whose pixel data is corrupt
        return UserError(
            f"Reading the data failed: {first} A file under the dataset root is probably "
            f"corrupt; check the files of data.root "
            f"({recipe.data.root or 'the built-in scenes cache'}) with `python -m "
            "keras_sdmtcnn.data check`.")
    return UserError(
        f"TensorFlow's runtime failed while training ({type(error).__name__}: {first[:300]}). "
        "The run keeps its last checkpoint and the same command resumes from it; "
        "`--verbose` shows the runtime's own report.")


def _device():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0])
        return f"the GPU ({details.get('device_name', gpus[0].name)})"
    return "the CPU"


def out_of_memory_message(recipe, detail=""):
    from keras_sdmtcnn.process.memory import describe_limit

    height, width = recipe.data.image_size
    limit = describe_limit()
    return (
        f"Out of memory on {_device()} while training {recipe.name} with training.batch_size "
        f"{recipe.training.batch_size} at data.image_size {height} x {width}"
        + (f" ({detail[:160]})" if detail else "")
        + (f"; this process may use {limit}" if limit else "")
        + ". Try a smaller training.batch_size, training.mixed_precision: mixed_bfloat16 "
        "(or mixed_float16 on a GPU), or fewer data.tasks; the run resumes from its last "
        "checkpoint.")


class Ending:
    """What the parent of a supervised ``fit`` says when the training process ends by a signal.

    Run in the parent, which loads no TensorFlow: it reads the run
    directory (its resume point) and marks a run that said ``running`` as
    failed, with what happened.
    """

    def __init__(self, recipe, run_dir=None, overwrite=False):
        self.recipe, self.overwrite = recipe, overwrite
        self.run_dir = RunDir(default_run_dir(recipe, run_dir))
        try:
            self.cluster = (read_cluster() if recipe.training.distribute == "multi_worker"
                            else None)
        except UserError:
            self.cluster = None
        self.writes = self.cluster is None or self.cluster.is_chief

    def _resume(self):
        if self.overwrite:
            return (f"The old run in {self.run_dir.path} is untouched; the new one had not "
                    "finished.")
        try:
            state = self.run_dir.read_state()
        except UserError:
            state = None
        if state is None:
            return "No epoch had finished, so there is no checkpoint to resume from."
        return (f"{self.run_dir.path} keeps its last checkpoint (epoch {state['epoch']}): the "
                "same command resumes from it.")

    def _mark(self, reason):
        if self.writes and not self.overwrite:
            try:
                self.run_dir.mark_ended(reason)
            except (UserError, OSError):
                pass

    def stopped(self, signal_name):
        self._mark(f"stopped by {signal_name}")
        return f"fit: stopped by {signal_name}. {self._resume()}"

    def died(self, signal_name):
        from keras_sdmtcnn.process.cluster import waited_message
        from keras_sdmtcnn.process.memory import describe_limit

        if signal_name == "SIGALRM" and self.cluster is not None:  # a bounded wait ran out
            self._mark("a worker did not answer")
            return waited_message(self.cluster, self.recipe.training.peer_timeout)

        self._mark(f"the training process died ({signal_name})")
        limit = describe_limit()
        may_use = f" This process may use {limit}." if limit else ""
        if signal_name == "SIGKILL":
            what = ("fit's training process was killed (SIGKILL) without a word from "
                    "TensorFlow: on Linux that is most often the kernel's out-of-memory "
                    f"killer.{may_use}")
        else:
            what = (f"fit's training process crashed inside TensorFlow's runtime "
                    f"({signal_name}). Under a memory limit the usual cause is memory running "
                    f"out.{may_use}")
        return (f"{what} Try a smaller training.batch_size (now "
                f"{self.recipe.training.batch_size}), training.mixed_precision, or fewer "
                f"data.tasks; `--verbose` shows the runtime's own lines. {self._resume()}")
