"""The recipe schema: typed dataclasses with defaults, and the checks types cannot make.

A recipe has seven sections (``data``, ``model``, ``objective``, ``training``,
``output``, ``evaluation``, ``speed``) whose fields all have defaults; a YAML file only overrides
fields (``loading.py`` reads it). An unknown key, a value of the wrong type
or an impossible value raises :class:`~keras_sdmtcnn.errors.UserError`
naming the key path (``training.epochs``) and, for a misspelt key or
choice, the closest valid one.

This package imports no TensorFlow: a bad recipe is reported in well under a
second. The choices of ``objective.name`` and ``objective.weighting`` are
the names under which ``training/objectives.py`` and
``training/weighting.py`` register their classes (a test holds the two
together).
"""

import dataclasses
import difflib
import math
import os
import types
import typing

from keras_sdmtcnn.data.formats import FORMAT_NAMES, get_format
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import TASK_NAMES

OBJECTIVE_NAMES = ("separate", "ensemble", "teacher_only")
WEIGHTING_NAMES = ("equal", "dwa", "uncertainty")
DISTILLATION_NAMES = ("paper", "cauchy_schwarz")
FEATURE_LEVELS = ("middle", "last")
ALL_TASKS = list(TASK_NAMES)


@dataclasses.dataclass
class ScenesConfig:
    """The built-in procedural dataset (``data.format: scenes``)."""

    num_train: int = 400
    num_val: int = 100
    height: int = 96
    width: int = 128
    seed: int = 0
    cache_dir: str = "~/.cache/keras_sdmtcnn"


@dataclasses.dataclass
class DataConfig:
    """Which data, at which size, with which preprocessing."""

    format: str = "scenes"  # scenes | taskonomy | nyuv2 | cityscapes
    root: str | None = None  # dataset root (all but scenes)
    tasks: list = dataclasses.field(default_factory=lambda: list(ALL_TASKS))
    image_size: list = dataclasses.field(default_factory=lambda: [288, 384])
    num_classes: int | None = None  # default: the format's (scenes 7, taskonomy 18, nyuv2 13, cityscapes 7)
    ignore_label: int | None = None  # default: the format's (0 scenes/taskonomy, -1 nyuv2/cityscapes)
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


@dataclasses.dataclass
class ModelConfig:
    """Architecture; the defaults are the paper's."""

    decoder: str = "segnet"  # segnet | unet
    attention: bool = True
    width_multiplier: float = 1.0
    encoder_filters: list = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    encoder_depths: list = dataclasses.field(default_factory=lambda: [2, 2, 3, 4])
    bottleneck_filters: int = 1024
    student_filters: list = dataclasses.field(default_factory=lambda: [128, 64, 32, 16])
    synchronized_bn: bool | None = None  # default: on when there is more than one replica


@dataclasses.dataclass
class ObjectiveConfig:
    """The training objective (``objectives.py``)."""

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
    # (Baseline-3): stage 1 trains the Teacher (teacher_only) in
    # RUN_DIR/stage1_teacher, stage 2 a Student network from scratch with it
    # frozen. A run directory: that finished run's Teacher, frozen.
    frozen_teacher: str | None = None
    # Li & Bilen feature distillation: {task: finished single-task run directory}.
    feature_teachers: dict = dataclasses.field(default_factory=dict)
    feature_weights: dict = dataclasses.field(default_factory=dict)  # lambda_t (default 1)
    # Where features are distilled: the bottleneck ("last", the default) and
    # optionally the middle encoder stage too ("middle"; their Table 4).
    feature_levels: list = dataclasses.field(default_factory=lambda: ["last"])
    # The adaptors' own learning rate (the paper: 0.1, the network 1e-4);
    # null: the network's (training.learning_rate).
    adaptor_learning_rate: float | None = None


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
    mixed_precision: str = "none"  # none | mixed_float16 | mixed_bfloat16
    steps_per_epoch: int | None = None  # default: the whole training split
    validation_steps: int | None = None  # default: the whole validation split


@dataclasses.dataclass
class OutputConfig:
    run_dir: str | None = None  # default: runs/<recipe name>
    monitor: str = "val_loss"  # what the best checkpoint minimises
    verbose: int = 1  # 0 silent, 1 progress bar and a line per epoch
    tensorboard: bool = True  # logs in RUN_DIR/tensorboard
    panels_every: int = 5  # prediction panels in TensorBoard every N epochs (0: never)


@dataclasses.dataclass
class EvaluationConfig:
    """How validation metrics are computed (during ``fit`` and by ``evaluate``)."""

    # pooled: pixels pooled over the split (LibMTL); mtan: the mean of
    # per-batch values for depth and normals (the MTAN reference code).
    convention: str = "pooled"
    batch_size: int | None = None  # validation batch size; default training.batch_size


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


CHOICES = {
    "data.format": FORMAT_NAMES,
    "data.val_source": ("val", "holdout"),
    "data.image_normalization": ("unit", "imagenet"),
    "data.target_normalization": ("unit", "standley"),
    "model.decoder": ("segnet", "unet"),
    "objective.name": OBJECTIVE_NAMES,
    "objective.regression_kd": ("mse", "euclidean"),
    "objective.distillation": DISTILLATION_NAMES,
    "objective.weighting": WEIGHTING_NAMES,
    "training.optimizer": ("adam", "adamw", "sgd"),
    "training.distribute": ("auto", "none", "mirrored", "multi_worker"),
    "training.mixed_precision": ("none", "mixed_float16", "mixed_bfloat16"),
    "evaluation.convention": ("pooled", "mtan"),
}


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


def build(cls, values, path):
    if not isinstance(values, dict):
        raise UserError(f"{path or 'the recipe'} must be a mapping of keys, got {values!r}.")
    fields = _fields(cls)
    kwargs = {}
    for key, value in values.items():
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


# The seeds TensorFlow, numpy and Python all accept.
MAX_SEED = 2**31 - 1


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_seed(key, value):
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{key} must be an integer from 0 to {MAX_SEED}, got {value}.")


def validate(recipe):
    """Checks values that types cannot: choices, ranges, task names, sizes."""
    for path, allowed in CHOICES.items():
        section, key = path.split(".")
        value = getattr(getattr(recipe, section), key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{path} must be one of {', '.join(allowed)}; got {value!r}.{hint}"
            )
    data, model, training = recipe.data, recipe.model, recipe.training
    if not data.tasks:
        raise UserError(f"data.tasks is empty: list at least one of {', '.join(ALL_TASKS)}.")
    for task in data.tasks:
        if task not in ALL_TASKS:
            close = difflib.get_close_matches(str(task), ALL_TASKS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"data.tasks names unknown task {task!r}.{hint} "
                f"Allowed: {', '.join(ALL_TASKS)}."
            )
    if len(set(data.tasks)) != len(data.tasks):
        raise UserError(f"data.tasks repeats a task: {data.tasks}.")
    factor = 2 ** len(model.encoder_filters)
    if (len(data.image_size) != 2
            or not all(isinstance(s, int) and s > 0 and s % factor == 0
                       for s in data.image_size)):
        raise UserError(
            f"data.image_size must be [height, width], each a positive multiple of "
            f"{factor} (the model pools {len(model.encoder_filters)} times); "
            f"got {data.image_size}."
        )
    fmt = get_format(data.format)
    if fmt.needs_root and not data.root:
        raise UserError(
            f"data.root is required for data.format: {data.format}; set it in the "
            "recipe or with --set data.root=PATH."
        )
    extra = [t for t in data.tasks if t not in fmt.tasks]
    if extra:
        raise UserError(
            f"data.tasks has {extra}, which data.format: {data.format} does not "
            f"provide (it has {', '.join(fmt.tasks)})."
        )
    if data.val_source == "holdout" and not fmt.holdout:
        with_holdout = [f for f in FORMAT_NAMES if get_format(f).holdout]
        raise UserError(
            f"data.val_source: holdout is for {' and '.join(with_holdout)}; with data.format: "
            f"{data.format}, choose the validation buildings with data.val_split."
        )
    if data.val_source == "holdout" and not 0 < data.holdout_fraction < 1:
        raise UserError(
            f"data.holdout_fraction must be in (0, 1) with data.val_source: holdout, "
            f"got {data.holdout_fraction}."
        )
    if data.num_classes is not None and data.num_classes < 2:
        raise UserError(f"data.num_classes must be >= 2, got {data.num_classes}.")
    s = data.scenes
    if s.num_train < 1 or s.num_val < 1:
        raise UserError("data.scenes.num_train and data.scenes.num_val must be >= 1.")
    if s.height < 16 or s.width < 16:
        raise UserError("data.scenes.height and data.scenes.width must be >= 16.")
    if len(model.encoder_depths) != len(model.encoder_filters):
        raise UserError("model.encoder_depths and model.encoder_filters must have the same length.")
    if len(model.student_filters) != len(model.encoder_filters):
        raise UserError(
            f"model.student_filters needs {len(model.encoder_filters)} entries "
            "(one transposed convolution per encoder block)."
        )
    for key in ("train_split", "val_split"):
        value = getattr(data, key)
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise UserError(f"data.{key} must be a list of names (strings), got {value}.")
    if recipe.output.panels_every < 0:
        raise UserError(f"output.panels_every must be >= 0 (0: never), got "
                        f"{recipe.output.panels_every}.")
    for key in ("encoder_filters", "encoder_depths", "student_filters"):
        values = getattr(model, key)
        if not all(_is_int(v) and v >= 1 for v in values):
            raise UserError(f"model.{key} must be a list of integers >= 1, got {values}.")
    for key in ("seed", "holdout_seed"):
        _check_seed(f"training.{key}" if key == "seed" else f"data.{key}",
                    getattr(training if key == "seed" else data, key))
    _check_seed("data.scenes.seed", data.scenes.seed)
    for key, value in (("data.root", data.root), ("output.run_dir", recipe.output.run_dir),
                       ("data.scenes.cache_dir", data.scenes.cache_dir)):
        if value and os.path.isfile(os.path.expanduser(value)):
            raise UserError(f"{key} is {value}, which is a file: give a folder.")
    threads = recipe.speed.intra_op_threads
    if threads is not None and not (_is_int(threads) and threads >= 0):
        raise UserError(
            f"speed.intra_op_threads must be an integer >= 0 (0: TensorFlow's choice) or null "
            f"(automatic), got {threads!r}.")
    if model.width_multiplier <= 0:
        raise UserError(f"model.width_multiplier must be > 0, got {model.width_multiplier}.")
    if recipe.objective.kd_weight < 0:
        raise UserError(f"objective.kd_weight must be >= 0, got {recipe.objective.kd_weight}.")
    if recipe.objective.temperature <= 0:
        raise UserError("objective.temperature must be > 0.")
    for task, weight in recipe.objective.task_weights.items():
        if task not in data.tasks:
            raise UserError(
                f"objective.task_weights names {task!r}, which is not in data.tasks {data.tasks}."
            )
        if not _is_number(weight) or weight < 0:
            raise UserError(
                f"objective.task_weights.{task} must be a finite number >= 0, got {weight!r}.")
    objective = recipe.objective
    if objective.dwa_temperature <= 0:
        raise UserError(f"objective.dwa_temperature must be > 0, got {objective.dwa_temperature}.")
    if objective.frozen_teacher is not None:
        if objective.name == "teacher_only":
            raise UserError(
                "objective.frozen_teacher distils into a Student: use objective.name "
                "separate or ensemble with it, not teacher_only.")
        if objective.feature_teachers:
            raise UserError(
                "objective.frozen_teacher and objective.feature_teachers are two methods; "
                "set one of them.")
    for key in ("feature_teachers", "feature_weights"):
        for task, value in getattr(objective, key).items():
            if task not in data.tasks:
                raise UserError(
                    f"objective.{key} names {task!r}, which is not in data.tasks {data.tasks}.")
            if key == "feature_teachers" and not isinstance(value, str):
                raise UserError(
                    f"objective.feature_teachers.{task} must be a run directory, got {value!r}.")
            if key == "feature_weights" and (not _is_number(value) or value < 0):
                raise UserError(
                    f"objective.feature_weights.{task} must be a number >= 0, got {value!r}.")
    if not objective.feature_teachers:
        for key, default in (("feature_weights", {}), ("feature_levels", ["last"]),
                             ("adaptor_learning_rate", None)):
            if getattr(objective, key) != default:
                raise UserError(
                    f"objective.{key} is set but objective.feature_teachers is not: it only "
                    "applies to Li & Bilen feature distillation. Set feature_teachers or "
                    f"remove {key}.")
    levels = objective.feature_levels
    if (not all(level in FEATURE_LEVELS for level in levels)
            or len(set(levels)) != len(levels)):
        raise UserError(
            f"objective.feature_levels must list distinct values of "
            f"{', '.join(FEATURE_LEVELS)}; got {levels!r}.")
    rate = objective.adaptor_learning_rate
    if rate is not None and rate <= 0:
        raise UserError(
            f"objective.adaptor_learning_rate must be a positive number (the paper: 0.1), "
            f"got {rate}.")
    batch = recipe.evaluation.batch_size
    if batch is not None and batch < 1:
        raise UserError(f"evaluation.batch_size must be >= 1 (or null), got {batch}.")
    if training.epochs < 1:
        raise UserError(f"training.epochs must be >= 1, got {training.epochs}.")
    if training.batch_size < 1:
        raise UserError(f"training.batch_size must be >= 1, got {training.batch_size}.")
    if training.learning_rate <= 0:
        raise UserError(f"training.learning_rate must be > 0, got {training.learning_rate}.")
    if training.peer_timeout <= 0:
        raise UserError(f"training.peer_timeout must be > 0 seconds, got {training.peer_timeout}.")
    if training.cpu_replicas < 1:
        raise UserError(f"training.cpu_replicas must be >= 1, got {training.cpu_replicas}.")
    for key in ("steps_per_epoch", "validation_steps"):
        value = getattr(training, key)
        if value is not None and value < 1:
            raise UserError(f"training.{key} must be >= 1 (or null), got {value}.")
