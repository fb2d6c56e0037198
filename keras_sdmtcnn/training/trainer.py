"""The one trainer: networks, a list of loss terms and one weighting, ``train_step`` written once.

:class:`MultiTaskTrainer` is a ``keras.Model`` over the graph that a method
(``methods.py``) composes from its networks: SD-MTCNN's one network,
Baseline-3's frozen stage-1 network beside a Student network, or Li &
Bilen's network beside frozen single-task experts. Its ``compile`` takes an
objective (``objectives.py``) instead of a loss; the objective's term
objects and the method's own (``terms.py``) are what it adds up. ``fit``,
``evaluate`` and ``predict`` then work as for any Keras model:

- ``train_step`` computes every term on the graph's dict of outputs,
  applies the gradient of ``loss`` and tracks every term (``loss``,
  ``{task}_teacher_loss``, ``{task}_student_loss``, ``{task}_kd_loss``, ...)
  with one ``keras.metrics.Mean`` each.
- ``test_step`` tracks the same terms and updates the streaming task metrics
  of the Teacher and the Student (``metrics.py``), whose values appear in
  ``evaluate(..., return_dict=True)`` as ``{task}_{branch}_{metric}``.

How the terms add up: task by task, each task's weighted terms (its task
losses) summed and times its weight go to the weighting, its other terms
(distillation) are added as they are; the method's terms last. The
weighting's epoch-end update reads the tracked means of the weighted terms
through the term objects themselves.

Distribution: the loss terms are replica-local shares of the global-batch
mean (``losses.global_mean``), so the gradients that ``tf.distribute`` sums
across replicas are those of the global-batch loss. Trackers record each
share times the number of replicas, so their (summed) values are the
global-batch values.
"""

import contextlib

import keras
import tensorflow as tf

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training.methods import SelfDistillation, method_config, method_from_config
from keras_sdmtcnn.training.metrics import make_task_metric
from keras_sdmtcnn.training.objectives import Objective
from keras_sdmtcnn.training.terms import add_up


def compute_policy(model):
    """The dtype policy ``model``'s convolutions compute in: its run's precision."""
    queue = [model]
    while queue:
        layer = queue.pop(0)
        if isinstance(layer, keras.layers.Conv2D):
            return layer.dtype_policy.name
        queue.extend(getattr(layer, "layers", []))
    return "float32"


@contextlib.contextmanager
def _global_policy(name):
    """Keras' global dtype policy set to ``name`` (``None``: unchanged) for a block."""
    previous = keras.config.dtype_policy()
    if name is not None:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiTaskTrainer(keras.Model):
    """Trains a method's networks with its loss terms: the one trainer of every method.

    Args:
        method: a :class:`~keras_sdmtcnn.training.methods.Method` (or its
            saved config), or a network config (``SDMTCNN.get_config()``),
            which is SD-MTCNN's self-distillation.
        terms: loss terms of your own (``terms.Term``), added to the
            method's and the objective's: a new distillation method.
        dtype_policy: the Keras dtype policy a saved method's networks are
            rebuilt in (``"mixed_bfloat16"``, ...; default: the global
            policy). Saved with the model, so a loaded model computes as it
            was trained.

    Example:
        >>> network = SDMTCNN(["semantic", "depth"], num_classes=13, image_size=(64, 64))
        >>> trainer = MultiTaskTrainer.for_network(network)
        >>> trainer.compile(keras.optimizers.Adam(1e-4), SeparateObjective())
        >>> trainer.fit(train_ds, validation_data=val_ds, epochs=200)
    """

    def __init__(self, method, terms=(), dtype_policy=None, **kwargs):
        with _global_policy(dtype_policy):
            if isinstance(method, dict):
                method = (method_from_config(method) if "kind" in method
                          else SelfDistillation(method))
            image, outputs = method.compose()
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self.method = method
        self.dtype_policy_name = compute_policy(self)
        network = method.network_config
        self.tasks = tuple(network["tasks"])
        self.num_classes = int(network.get("num_classes", 13))
        self.ignore_label = int(network.get("ignore_label", -1))
        self.branches = ("teacher", "student")
        terms = [keras.saving.deserialize_keras_object(t) if isinstance(t, dict) else t
                 for t in terms]
        self.own_terms = list(terms)
        self.method_terms = method.terms() + self.own_terms
        for term in self.method_terms:
            term.build_for(outputs)

    @classmethod
    def for_network(cls, network, terms=(), name="sdmtcnn"):
        """SD-MTCNN's trainer of ``network`` (an ``SDMTCNN``): it trains that network's layers."""
        return cls(SelfDistillation(network), terms=terms, name=name)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "method": method_config(self.method), "dtype_policy": self.dtype_policy_name,
                "terms": [keras.saving.serialize_keras_object(t) for t in self.own_terms]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def compile(self, optimizer="adam", objective=None, jit_compile=False,
                steps_per_execution=1, run_eagerly=False, convention="pooled", **kwargs):
        """Configures training.

        Args:
            optimizer: a ``keras.optimizers.Optimizer`` or its name.
            objective: an :class:`~keras_sdmtcnn.training.objectives.Objective`
                (default: ``SeparateObjective()``, the paper's Eq. 5).
            jit_compile: XLA; off by default (slower for SegNet on CPUs).
            convention: how the validation metrics are computed:
                ``"pooled"`` over the split's pixels, or ``"mtan"`` as the
                mean of per-batch values (``metrics.CONVENTIONS``).
        """
        if objective is None:
            from keras_sdmtcnn.training.objectives import SeparateObjective

            objective = SeparateObjective()
        if not isinstance(objective, Objective):
            raise UserError(
                f"objective must be an Objective (see keras_sdmtcnn.training.objectives), "
                f"got {type(objective).__name__}.")
        if kwargs.get("loss") is not None:
            raise UserError("MultiTaskTrainer takes an `objective`, not a `loss`: the task "
                            "losses are declared by the tasks.")
        super().compile(optimizer=optimizer, jit_compile=jit_compile,
                        steps_per_execution=steps_per_execution, run_eagerly=run_eagerly)
        self.objective = objective
        self.terms = objective.terms(self.tasks, self.ignore_label) + list(self.method_terms)
        # The weighting's state (DWA history, learned log-variances) is part
        # of the model: tracked here, saved in checkpoints, restored on resume.
        self.loss_weighting = objective.make_weighting(list(self.tasks))
        names = ["loss"] + [name for term in self.terms for name in term.names()]
        self._term_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.set_evaluation_convention(convention)
        # A plain attribute: neither saved with the model nor logged.
        self.__dict__["_label_check"] = _LabelCheck()

    def set_evaluation_convention(self, convention):
        """Replaces the task metrics by those of ``convention`` (``"pooled"`` or ``"mtan"``)."""
        self.convention = convention
        self._task_metrics = [
            (task, branch, make_task_metric(
                task, output_name(task, branch), self.num_classes, self.ignore_label,
                convention))
            for task in self.tasks
            for branch in self.branches
        ]
        self.test_function = None  # traced again with the new metrics

    def logged_terms(self):
        """The names of the loss terms this trainer logs, ``loss`` first."""
        return list(self._term_trackers)

    def optimizer_settings(self):
        """``{layer name: learning rate}`` of the layers whose term gives them their own."""
        rates = {}
        # _flatten_layers: Keras' walk over a layer's own sublayers (internal,
        # pinned to Keras 3.15; a Layer has no public list of them).
        for term in getattr(self, "terms", self.method_terms):
            if term.learning_rate is not None:
                rates.update({layer.name: term.learning_rate
                              for layer in term._flatten_layers(include_self=False)
                              if layer.weights})
        return rates

    # === Branches ===

    def branch_model(self, branch):
        """A sub-model of one branch (``"teacher"`` or ``"student"``), sharing weights."""
        if branch not in self.branches:
            raise UserError(f"branch must be one of {self.branches}, got {branch!r}.")
        return self.method.branch_model(self, branch)

    def teacher_model(self):
        """The Teacher: encoder and attention decoders (shares weights)."""
        return self.branch_model("teacher")

    def student_model(self):
        """The Student: encoder and deconvolution heads (shares weights)."""
        return self.branch_model("student")

    @property
    def metrics(self):
        trackers = list(getattr(self, "_term_trackers", {}).values())
        return trackers + [m for _, _, m in getattr(self, "_task_metrics", [])]

    def reset_metrics(self):
        """Resets every metric, in one traced call where no strategy is active.

        Keras resets each metric variable with its own eager assignment:
        about 100 eager ops for the demo's model, 10 ms on the project's
        2-core CPU, which ``train_on_batch`` and ``test_on_batch`` pay on
        every call (a tenth of the demo's train step; ``fit`` pays it once
        an epoch). Traced once per set of metrics, the same ``reset_state``
        calls run as one graph. Under a ``tf.distribute`` strategy, Keras'
        own reset runs (once an epoch there).
        """
        if tf.distribute.has_strategy() or self.run_eagerly:
            return super().reset_metrics()
        metrics = tuple(self.metrics)
        cache = self.__dict__.setdefault("_metric_reset", _MetricReset())
        if cache.metrics != metrics:
            def reset_all():
                for metric in metrics:
                    metric.reset_state()

            cache.metrics = metrics
            cache.function = tf.function(reset_all)
        cache.function()

    # === The loss ===

    def _terms(self, y, y_pred):
        """Every term's value, and ``loss``: what is minimised (``terms.add_up``)."""
        return add_up(self.terms, self.tasks, y, y_pred, self.loss_weighting,
                      self.objective.weight)

    def task_loss_means(self, logs):
        """``{task: sum of its weighted terms' epoch means}``, read from the terms' own names."""
        means = {}
        for term in self.terms:
            if term.weighted:
                means[term.task] = means.get(term.task, 0.0) + sum(
                    float(logs[name]) for name in term.names())
        return means

    # === The public API's boundary: the same checks as the commands ===

    def _check_inputs(self, x, y=None, needs_targets=True):
        """Refuses images the model cannot take and targets that miss a task (``UserError``).

        Images must be of the model's input size (every call, not only the
        first), floats scaled as the recipe's ``data.image_normalization``
        says (never raw 0-255 pixels: the exported model scales those, the
        Keras model does not); targets a dict with every task.
        """
        from keras_sdmtcnn.data.preprocessing import check_model_inputs

        check_model_inputs(x, y, self.inputs[0].shape, self.tasks if needs_targets else None)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` after the boundary checks; warns of labels it cannot count."""
        self._check_inputs(x, y)
        check = self.__dict__.get("_label_check")
        if check is not None:
            check.reset()
        results = super().evaluate(x, y, *args, **kwargs)
        if check is not None:
            check.warn(self.tasks, self.num_classes, self.ignore_label)
        return results

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict`` after the boundary checks of the images."""
        self._check_inputs(x, needs_targets=False)
        return super().predict(x, *args, **kwargs)

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """``keras.Model.fit``, plus the epoch-end update of an adaptive weighting."""
        from keras_sdmtcnn.training.weighting import EpochEndWeighting, EqualWeighting

        self._check_inputs(x, y)
        callbacks = list(callbacks or [])
        weighting = getattr(self, "loss_weighting", None)
        if weighting is not None and not isinstance(weighting, EqualWeighting):
            callbacks.insert(0, EpochEndWeighting(self))
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    # === The steps ===

    def _track(self, terms):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for name, tracker in self._term_trackers.items():
            tracker.update_state(terms[name] * replicas)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            terms = self._terms(y, y_pred)
            loss = terms["loss"]
            if self.losses:
                loss += tf.add_n(self.losses)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        self._track(terms)
        return _for_keras_reduction({name: t.result() for name, t in self._term_trackers.items()})

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        self._track(self._terms(y, y_pred))
        check = self.__dict__.get("_label_check")
        if check is not None:
            check.count(y, self.tasks, self.num_classes, self.ignore_label)
        for task, branch, metric in self._task_metrics:
            metric.update_state(y[task], y_pred[output_name(task, branch)])
        return _for_keras_reduction(self.get_metrics_result())

    def make_test_function(self, force=False):
        # The split metrics use shapes known only at run time (boolean
        # masks, bincounts), which XLA cannot compile: the test step always
        # runs as a plain graph, whatever jit_compile says for training.
        jit_compile = self.jit_compile
        self.jit_compile = False
        try:
            return super().make_test_function(force)
        finally:
            self.jit_compile = jit_compile

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (TF backend) builds the model and optimizer from a symbolic
        # batch here. This model is built at construction and compile()
        # creates its metrics, so only the optimizer needs building, which
        # needs no data. Two reasons to do it here ourselves, eagerly:
        # - Keras reduces a whole (x, {task: y}) batch with one
        #   strategy.reduce first, which MultiWorkerMirroredStrategy rejects;
        # - without a strategy Keras would skip it, and the optimizer's
        #   ~800 slot variables were then created inside the first traced
        #   step, each lifted out of the graph behind a tf.cond: about 30 s
        #   of the demo's first step (bench: "time to first train step").
        strategy = getattr(self, "_distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "objective": keras.saving.serialize_keras_object(self.objective),
        }

    def compile_from_config(self, config):
        optimizer = keras.saving.deserialize_keras_object(config["optimizer"])
        objective = keras.saving.deserialize_keras_object(config["objective"])
        self.compile(optimizer=optimizer, objective=objective)
        if self.built:
            self.optimizer.build(self.trainable_variables)


def _for_keras_reduction(logs):
    """Logs shaped for Keras' cross-replica reduction of step outputs.

    Across several workers Keras reduces each log with
    ``strategy.reduce("MEAN", value, axis=0)``, which needs an axis: scalars
    get one there (the reduction returns scalars again).
    """
    strategy = tf.distribute.get_strategy()
    in_multi_worker = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            in_multi_worker is not None and in_multi_worker()):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


class _LabelCheck:
    """Counts the labels ``evaluate`` met outside ``[0, num_classes)``, the ignore label aside.

    The losses and metrics leave such pixels out; a split full of them
    would score a loss of 0 and a NaN mIoU without a word, so ``evaluate``
    warns with their number. A plain object holding a summed counter:
    neither a metric that would be logged nor a variable saved with the model.
    """

    def __init__(self):
        self.variable = tf.Variable(0.0, trainable=False, dtype=tf.float64,
                                    synchronization=tf.VariableSynchronization.ON_READ,
                                    aggregation=tf.VariableAggregation.SUM)

    def reset(self):
        self.variable.assign(0.0)

    def count(self, y, tasks, num_classes, ignore_label):
        from keras_sdmtcnn.tasks import get_task

        for task in tasks:
            if get_task(task).is_classification and task in y:
                labels = tf.cast(y[task], tf.int64)
                bad = (labels != ignore_label) & ((labels < 0) | (labels >= num_classes))
                self.variable.assign_add(tf.reduce_sum(tf.cast(bad, tf.float64)))

    def warn(self, tasks, num_classes, ignore_label):
        import sys

        from keras_sdmtcnn.tasks import get_task

        bad = int(self.variable.numpy())
        if bad:
            task = next(t for t in tasks if get_task(t).is_classification)
            print(f"warning: {bad:,} {task} labels were outside 0..{num_classes - 1} and not "
                  f"the ignore label {ignore_label}: the losses and metrics left them out. "
                  "Check the targets, or num_classes and ignore_label.", file=sys.stderr)


class _MetricReset:
    """The traced reset of a model's metrics and the metrics it was traced for.

    A plain object, so neither Keras nor TensorFlow tracks the function as
    part of the model (it would otherwise be saved with it).
    """

    metrics = None
    function = None
