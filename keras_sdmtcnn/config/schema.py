"""The recipe schema: typed dataclasses with defaults, each section checking its own values.

A recipe has seven sections (``data``, ``model``, ``objective``, ``training``,
``output``, ``evaluation``, ``speed``) whose fields all have defaults; a YAML
file only overrides fields (``loading.py`` reads it). An unknown key, a value
of the wrong type or an impossible value raises
:class:`~keras_sdmtcnn.errors.UserError` naming the key path
(``training.epochs``) and, for a misspelt key or choice, the closest valid
one. Types are checked by :func:`build`; each section's ``check`` holds the
rules that types cannot say, each written once (the network checks its
``ModelConfig`` with the same method). The names a recipe may choose come
from the registries themselves (``registry.py``, ``data/formats.py``,
``tasks.py``).

This package imports no TensorFlow: a bad recipe is reported in well under a
second.
"""

import dataclasses
import difflib
import math
import os
import sys
import types
import typing

from keras_sdmtcnn import registry
from keras_sdmtcnn.data.formats import FORMAT_NAMES, get_format
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import TASK_NAMES

ALL_TASKS = list(TASK_NAMES)
MAX_SEED = 2**31 - 1  # the seeds TensorFlow, numpy and Python all accept

# Keys renamed since 0.2 (a "teacher" is now only the Teacher branch): the
# old key still works, with one note.
RENAMED = {"objective.frozen_teacher": "objective.stage1_network",
           "objective.feature_teachers": "objective.experts"}


def _choice(key, value, allowed):
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"{key} must be one of {', '.join(allowed)}; got {value!r}.{hint}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _at_least(key, value, minimum, what=""):
    if value < minimum:
        raise UserError(f"{key} must be >= {minimum}{what}, got {value}.")


def _above(key, value, minimum=0, what=""):
    if value <= minimum:
        raise UserError(f"{key} must be > {minimum}{what}, got {value}.")


def _seed(key, value):
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{key} must be an integer from 0 to {MAX_SEED}, got {value}.")


def _not_a_file(key, value):
    if value and os.path.isfile(os.path.expanduser(value)):
        raise UserError(f"{key} is {value}, which is a file: give a folder.")


@dataclasses.dataclass
class ScenesConfig:
    """The built-in procedural dataset (``data.format: scenes``)."""

    num_train: int = 400
    num_val: int = 100
    height: int = 96
    width: int = 128
    seed: int = 0
    cache_dir: str = "~/.cache/keras_sdmtcnn"

    def check(self, recipe=None):
        if self.num_train < 1 or self.num_val < 1:
            raise UserError("data.scenes.num_train and data.scenes.num_val must be >= 1.")
        if self.height < 16 or self.width < 16:
            raise UserError("data.scenes.height and data.scenes.width must be >= 16.")
        _seed("data.scenes.seed", self.seed)
        _not_a_file("data.scenes.cache_dir", self.cache_dir)


@dataclasses.dataclass
class DataConfig:
    """Which data, at which size, with which preprocessing."""

    format: str = "scenes"  # scenes | taskonomy | nyuv2 | cityscapes
    root: str | None = None  # dataset root (all but scenes)
    tasks: list = dataclasses.field(default_factory=lambda: list(ALL_TASKS))
    image_size: list = dataclasses.field(default_factory=lambda: [288, 384])
    # default: the format's (scenes 7, taskonomy 18, nyuv2 13, cityscapes 7)
    num_classes: int | None = None
    # default: the format's (0 scenes/taskonomy, -1 nyuv2/cityscapes)
    ignore_label: int | None = None
    # Taskonomy/scenes: buildings, a .txt or .csv (default splits/{train,val}.txt);
    # nyuv2/cityscapes: the split folder (default train and val).
    train_split: list | str | None = None
    val_split: list | str | None = None
    val_source: str = "val"  # val | holdout (a seeded part of train, for model selection)
    holdout_fraction: float = 0.1  # with val_source: holdout
    holdout_seed: int = 0
    label_dir: str | None = None  # cityscapes: label_7 (default, else label), label_19, label_2
    flip: bool = False  # random left-right flips in training (negates normal x)
    augment: bool = False  # MTAN's random scale {1, 1.2, 1.5} crop (depth / s) and flip
    cache: bool = False  # keep decoded samples in memory (nyuv2, cityscapes)
    image_normalization: str = "unit"  # unit ([0, 1]) | imagenet
    target_normalization: str = "unit"  # unit | standley (keypoints, edges)
    check_all_files: bool = True  # check every PNG header before training
    scenes: ScenesConfig = dataclasses.field(default_factory=ScenesConfig)

    def check(self, recipe):
        _choice("data.format", self.format, FORMAT_NAMES)
        for key, allowed in (("val_source", ("val", "holdout")),
                             ("image_normalization", ("unit", "imagenet")),
                             ("target_normalization", ("unit", "standley"))):
            _choice(f"data.{key}", getattr(self, key), allowed)
        self._check_tasks()
        factor = 2 ** len(recipe.model.encoder_filters)
        if (len(self.image_size) != 2
                or not all(isinstance(s, int) and s > 0 and s % factor == 0
                           for s in self.image_size)):
            raise UserError(
                f"data.image_size must be [height, width], each a positive multiple of "
                f"{factor} (the model pools {len(recipe.model.encoder_filters)} times); "
                f"got {self.image_size}.")
        self._check_format()
        if self.num_classes is not None:
            _at_least("data.num_classes", self.num_classes, 2)
        self.scenes.check()
        for key in ("train_split", "val_split"):
            value = getattr(self, key)
            if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
                raise UserError(f"data.{key} must be a list of names (strings), got {value}.")
        _seed("data.holdout_seed", self.holdout_seed)
        _not_a_file("data.root", self.root)

    def _check_tasks(self):
        if not self.tasks:
            raise UserError(f"data.tasks is empty: list at least one of {', '.join(ALL_TASKS)}.")
        for task in self.tasks:
            if task not in ALL_TASKS:
                close = difflib.get_close_matches(str(task), ALL_TASKS, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UserError(f"data.tasks names unknown task {task!r}.{hint} "
                                f"Allowed: {', '.join(ALL_TASKS)}.")
        if len(set(self.tasks)) != len(self.tasks):
            raise UserError(f"data.tasks repeats a task: {self.tasks}.")

    def _check_format(self):
        fmt = get_format(self.format)
        if fmt.needs_root and not self.root:
            raise UserError(
                f"data.root is required for data.format: {self.format}; set it in the "
                "recipe or with --set data.root=PATH.")
        extra = [t for t in self.tasks if t not in fmt.tasks]
        if extra:
            raise UserError(f"data.tasks has {extra}, which data.format: {self.format} does "
                            f"not provide (it has {', '.join(fmt.tasks)}).")
        if self.val_source == "holdout" and not fmt.holdout:
            with_holdout = [f for f in FORMAT_NAMES if get_format(f).holdout]
            raise UserError(
                f"data.val_source: holdout is for {' and '.join(with_holdout)}; with "
                f"data.format: {self.format}, choose the validation buildings with "
                "data.val_split.")
        if self.val_source == "holdout" and not 0 < self.holdout_fraction < 1:
            raise UserError(
                f"data.holdout_fraction must be in (0, 1) with data.val_source: holdout, "
                f"got {self.holdout_fraction}.")


DECODERS = ("segnet", "unet")


@dataclasses.dataclass
class ModelConfig:
    """Architecture; the defaults are the paper's.

    The network (``models/sdmtcnn.py``) is built from one of these, and each
    field is read where it is used: a new setting is one field here and the
    layer that reads it.
    """

    decoder: str = "segnet"  # segnet | unet
    attention: bool = True
    width_multiplier: float = 1.0
    encoder_filters: list = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    encoder_depths: list = dataclasses.field(default_factory=lambda: [2, 2, 3, 4])
    bottleneck_filters: int = 1024
    student_filters: list = dataclasses.field(default_factory=lambda: [128, 64, 32, 16])
    synchronized_bn: bool | None = None  # default: on when there is more than one replica
    # Keras' convention (PyTorch's 0.1 is Keras' 0.9, as in the MTAN code lineage).
    bn_momentum: float = 0.9

    def check(self, recipe=None):
        _choice("model.decoder", self.decoder, DECODERS)
        if not 0 <= self.bn_momentum < 1:
            raise UserError(f"model.bn_momentum must be in [0, 1), got {self.bn_momentum}.")
        for key in ("encoder_filters", "encoder_depths", "student_filters"):
            values = getattr(self, key)
            if not values or not all(_is_int(v) and v >= 1 for v in values):
                raise UserError(f"model.{key} must be a list of integers >= 1, got {values}.")
        if len(self.encoder_depths) != len(self.encoder_filters):
            raise UserError("model.encoder_depths and model.encoder_filters must have the "
                            "same length.")
        if len(self.student_filters) != len(self.encoder_filters):
            raise UserError(
                f"model.student_filters needs {len(self.encoder_filters)} entries (one "
                "transposed convolution per encoder block).")
        _above("model.width_multiplier", self.width_multiplier)
        _at_least("model.bottleneck_filters", self.bottleneck_filters, 1)

    def scaled(self, filters):
        """Filters times the width multiplier, rounded, at least 1."""
        return max(1, int(round(filters * self.width_multiplier)))

    @property
    def stages(self):
        return len(self.encoder_filters)

    def check_image_size(self, image_size, key="image_size"):
        """Each side a positive multiple of ``2 ** stages`` (or ``None``: free)."""
        factor = 2 ** self.stages
        if len(image_size) != 2:
            raise UserError(f"{key} must be (height, width), got {tuple(image_size)}.")
        for axis, size in zip(("height", "width"), image_size):
            if size is not None and (size < factor or size % factor):
                raise UserError(
                    f"{key}: {axis} {size} is not a positive multiple of {factor} (the model "
                    f"pools {self.stages} times): resize the input, e.g. to "
                    f"{max(factor, (size // factor) * factor)}.")


@dataclasses.dataclass
class ObjectiveConfig:
    """The training objective (``objectives.py``) and the methods that distil from trained nets."""

    name: str = "separate"  # separate (Eq. 5) | ensemble (Eq. 6) | teacher_only
    kd_weight: float = 1.0  # lambda; 0 is Baseline-2
    temperature: float = 1.0
    regression_kd: str = "mse"  # mse | euclidean (reading of Eq. 4)
    detach_teacher: bool = True
    task_weights: dict = dataclasses.field(default_factory=dict)
    distillation: str = "paper"  # paper (KL + l2, Eq. 3-4) | cauchy_schwarz (KDAM Eq. 4-7)
    weighting: str = "equal"  # equal (the paper) | dwa | uncertainty
    dwa_temperature: float = 2.0
    # null: self-distillation (SD-MTCNN). "train": traditional two-stage KD
    # (Baseline-3): stage 1 trains the stage-1 network (its Teacher branch,
    # teacher_only) in RUN_DIR/stage1_teacher, stage 2 a Student network from
    # scratch with it frozen. A run directory: that finished run's network, frozen.
    stage1_network: str | None = None
    # Li & Bilen feature distillation: {task: finished single-task run directory},
    # the single-task experts whose encoders the network's features are pulled to.
    experts: dict = dataclasses.field(default_factory=dict)
    feature_weights: dict = dataclasses.field(default_factory=dict)  # lambda_t (default 1)
    # Where features are distilled: the bottleneck ("last", the default) and
    # optionally the middle encoder stage too ("middle"; their Table 4).
    feature_levels: list = dataclasses.field(default_factory=lambda: ["last"])
    # The adaptors' own learning rate (the paper: 0.1, the network 1e-4);
    # null: the network's (training.learning_rate).
    adaptor_learning_rate: float | None = None
    # The adaptors' weight decay (the authors': 5e-4, as an L2 penalty on their
    # kernels, which is what weight decay is for Adam and SGD).
    adaptor_weight_decay: float = 5e-4

    def check(self, recipe):
        self.check_terms(recipe.data.tasks)
        if self.stage1_network is not None:
            if self.name == "teacher_only":
                raise UserError(
                    "objective.stage1_network distils into a Student: use objective.name "
                    "separate or ensemble with it, not teacher_only.")
            if self.experts:
                raise UserError("objective.stage1_network and objective.experts are two "
                                "methods; set one of them.")
        self._check_experts(recipe.data.tasks)

    def check_terms(self, tasks=None):
        """The rules of the terms' own settings (the objectives' Python API checks these too)."""
        _choice("objective.name", self.name, registry.OBJECTIVES)
        _choice("objective.regression_kd", self.regression_kd, ("mse", "euclidean"))
        _choice("objective.distillation", self.distillation, registry.DISTILLATIONS)
        _choice("objective.weighting", self.weighting, registry.WEIGHTINGS)
        _at_least("objective.kd_weight", self.kd_weight, 0)
        _above("objective.temperature", self.temperature)
        _above("objective.dwa_temperature", self.dwa_temperature)
        for task, weight in self.task_weights.items():
            if tasks is not None and task not in tasks:
                raise UserError(f"objective.task_weights names {task!r}, which is not in "
                                f"data.tasks {list(tasks)}.")
            if not _is_number(weight) or weight < 0:
                raise UserError(f"objective.task_weights.{task} must be a finite number >= 0, "
                                f"got {weight!r}.")

    def _check_experts(self, tasks):
        for key in ("experts", "feature_weights"):
            for task, value in getattr(self, key).items():
                if task not in tasks:
                    raise UserError(f"objective.{key} names {task!r}, which is not in "
                                    f"data.tasks {list(tasks)}.")
                if key == "experts" and not isinstance(value, str):
                    raise UserError(f"objective.experts.{task} must be a run directory, got "
                                    f"{value!r}.")
                if key == "feature_weights" and (not _is_number(value) or value < 0):
                    raise UserError(f"objective.feature_weights.{task} must be a number >= 0, "
                                    f"got {value!r}.")
        defaults = {"feature_weights": {}, "feature_levels": ["last"],
                    "adaptor_learning_rate": None, "adaptor_weight_decay": 5e-4}
        for key, default in defaults.items() if not self.experts else ():
            if getattr(self, key) != default:
                raise UserError(
                    f"objective.{key} is set but objective.experts is not: it only applies to "
                    f"Li & Bilen feature distillation. Set experts or remove {key}.")
        levels = self.feature_levels
        if not all(level in registry.FEATURE_LEVELS for level in levels) or len(
                set(levels)) != len(levels):
            raise UserError(f"objective.feature_levels must list distinct values of "
                            f"{', '.join(registry.FEATURE_LEVELS)}; got {levels!r}.")
        if self.adaptor_learning_rate is not None and self.adaptor_learning_rate <= 0:
            raise UserError(f"objective.adaptor_learning_rate must be a positive number (the "
                            f"paper: 0.1), got {self.adaptor_learning_rate}.")
        _at_least("objective.adaptor_weight_decay", self.adaptor_weight_decay, 0)


PRECISIONS = ("auto", "none", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class TrainingConfig:
    epochs: int = 200
    batch_size: int = 2
    optimizer: str = "adam"  # adam | adamw | sgd
    learning_rate: float = 1e-4
    weight_decay: float = 0.0  # adamw only
    seed: int = 0  # fixes data order, augmentation and initialisation
    deterministic: bool = False  # deterministic TF ops (slower; exact reruns)
    distribute: str = "auto"  # auto | none | mirrored | multi_worker (TF_CONFIG)
    # multi_worker: seconds a worker waits for the others (to connect, to
    # start, to finish) before it stops with an error naming them.
    peer_timeout: float = 300.0
    cpu_replicas: int = 1  # split the CPU into N logical devices (MirroredStrategy on CPU)
    # auto: mixed_bfloat16 on a CPU with native bfloat16 for a large enough
    # step, else float32 (process/settings.py, choose_precision) | none
    # (float32) | mixed_float16 | mixed_bfloat16
    mixed_precision: str = "auto"
    steps_per_epoch: int | None = None  # default: the whole training split
    validation_steps: int | None = None  # default: the whole validation split

    def check(self, recipe=None):
        _choice("training.optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        _choice("training.distribute", self.distribute,
                ("auto", "none", "mirrored", "multi_worker"))
        _choice("training.mixed_precision", self.mixed_precision,
                PRECISIONS)
        _at_least("training.epochs", self.epochs, 1)
        _at_least("training.batch_size", self.batch_size, 1)
        _above("training.learning_rate", self.learning_rate)
        _above("training.peer_timeout", self.peer_timeout, what=" seconds")
        _at_least("training.cpu_replicas", self.cpu_replicas, 1)
        _seed("training.seed", self.seed)
        for key in ("steps_per_epoch", "validation_steps"):
            value = getattr(self, key)
            if value is not None:
                _at_least(f"training.{key}", value, 1, " (or null)")


@dataclasses.dataclass
class OutputConfig:
    run_dir: str | None = None  # default: runs/<recipe name>
    monitor: str = "val_loss"  # what the best checkpoint minimises
    verbose: int = 1  # 0 silent, 1 progress bar and a line per epoch
    tensorboard: bool = True  # logs in RUN_DIR/tensorboard
    panels_every: int = 5  # prediction panels in TensorBoard every N epochs (0: never)

    def check(self, recipe=None):
        _at_least("output.panels_every", self.panels_every, 0, " (0: never)")
        _not_a_file("output.run_dir", self.run_dir)


@dataclasses.dataclass
class EvaluationConfig:
    """How validation metrics are computed (during ``fit`` and by ``evaluate``)."""

    # pooled: pixels pooled over the split (LibMTL); mtan: the mean of
    # per-batch values for depth and normals (the MTAN reference code).
    convention: str = "pooled"
    batch_size: int | None = None  # validation batch size; default training.batch_size

    def check(self, recipe=None):
        _choice("evaluation.convention", self.convention, ("pooled", "mtan"))
        if self.batch_size is not None:
            _at_least("evaluation.batch_size", self.batch_size, 1, " (or null)")


@dataclasses.dataclass
class SpeedConfig:
    """Speed-only switches: each changes how fast a step runs, never what it computes.

    Turn one off to rule it out when something looks wrong.
    """

    xla: bool = False  # XLA-compile the train step (on CPUs slower for SegNet)
    # TensorFlow's fused BatchNorm kernel (off under XLA); null: on CPUs, where
    # it was measured, and Keras' BatchNorm on GPUs (process/settings.py).
    fused_batchnorm: bool | None = None
    matmul_conv_grad: bool = True  # 3x3 kernel gradients as matrix products (CPUs only)
    # TensorFlow's graph optimizer on training graphs; null: off on CPUs, where
    # it costs seconds of start-up and measured no faster, on with a GPU.
    grappler: bool | None = None
    # Threads one op may use (TensorFlow's intra-op pool; independent ops
    # still run side by side). null: 1 for small steps on CPUs, where
    # splitting each small convolution across cores costs more than it wins,
    # else TensorFlow's choice (process/settings.py, configure_process);
    # 0: TensorFlow's choice (one per core); N: N. Process-wide, taken before
    # TensorFlow's first op (a later fit in the same process keeps it).
    intra_op_threads: int | None = None
    # Decode a small training or validation split (data/pipeline.py,
    # IN_MEMORY_LIMIT_MB each) once and read each epoch's samples from
    # memory: the same batches, bit for bit, and the cores left to the
    # train step. Off: every epoch decodes its files. (data.cache is
    # another thing: in memory whatever the size, with a shuffle that a
    # resumed run does not replay.)
    decoded_in_memory: bool = True

    def check(self, recipe=None):
        threads = self.intra_op_threads
        if threads is not None and not (_is_int(threads) and threads >= 0):
            raise UserError(
                f"speed.intra_op_threads must be an integer >= 0 (0: TensorFlow's choice) or "
                f"null (automatic), got {threads!r}.")


@dataclasses.dataclass
class Recipe:
    name: str = "recipe"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    speed: SpeedConfig = dataclasses.field(default_factory=SpeedConfig)


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(hint):
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value, hint, path):
    """Checks ``value`` against a field's type (ints pass as floats)."""
    if isinstance(hint, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, path)
            except UserError:
                continue
        raise UserError(
            f"{path} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})."
        )
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"{path} must be a finite number, got {value!r}.")
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise UserError(
        f"{path} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})."
    )


def _renamed(values, path):
    """``values`` with each old key (:data:`RENAMED`) under its new name, and one note."""
    out = dict(values)
    for old, new in RENAMED.items():
        section, key = old.split(".")
        new_key = new.split(".")[1]
        if path != section or key not in out:
            continue
        if new_key in out:
            raise UserError(f"{old} and {new} are one key (renamed); keep {new}.")
        value = out.pop(key)
        if value not in (None, {}):  # a recipe saved by 0.2 lists it empty
            print(f"note: {old} is now called {new}; the old name still works.",
                  file=sys.stderr)
        out[new_key] = value
    return out


def build(cls, values, path):
    if not isinstance(values, dict):
        raise UserError(f"{path or 'the recipe'} must be a mapping of keys, got {values!r}.")
    fields = _fields(cls)
    kwargs = {}
    for key, value in _renamed(values, path).items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" Did you mean {path + '.' if path else ''}{close[0]}?" if close else ""
            raise UserError(
                f"Unknown recipe key {full}.{hint} Valid keys here: {', '.join(fields)}."
            )
        hint = fields[key]
        if isinstance(value, list) and not value and full != "data.tasks":
            # (an empty data.tasks gets validate()'s message, which lists the tasks)
            raise UserError(
                f"{full} is an empty list: list at least one value, or leave {full} out "
                "for its default.")
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, full)
        else:
            kwargs[key] = _coerce(value, hint, full)
    return cls(**kwargs)


def validate(recipe):
    """Every section checks its own values (in the order of the recipe's sections)."""
    for section in dataclasses.fields(recipe):
        part = getattr(recipe, section.name)
        if dataclasses.is_dataclass(part):
            part.check(recipe)
