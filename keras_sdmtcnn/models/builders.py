"""From recipe sections to objects: the model, its optimizer and its objective."""

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN
from keras_sdmtcnn.process.settings import apply_speed
from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.optimizers import SGD, FusedAdam, FusedAdamW


def model_config(recipe, num_classes, ignore_label, replicas=1):
    """The ``SDMTCNN`` constructor arguments of a recipe."""
    m = recipe.model
    synchronized = m.synchronized_bn if m.synchronized_bn is not None else replicas > 1
    return dict(
        tasks=list(recipe.data.tasks),
        num_classes=num_classes,
        ignore_label=ignore_label,
        image_size=tuple(recipe.data.image_size),
        width_multiplier=m.width_multiplier,
        encoder_filters=m.encoder_filters,
        encoder_depths=m.encoder_depths,
        bottleneck_filters=m.bottleneck_filters,
        decoder=m.decoder,
        attention=m.attention,
        student_filters=m.student_filters,
        synchronized_bn=synchronized,
    )


def build_model(recipe, num_classes, ignore_label, replicas=1, teacher_runs=None):
    """The recipe's model: an SD-MTCNN, or one of the distillation wrappers.

    ``teacher_runs`` overrides where the frozen teachers come from (``fit``
    passes stage 1's run directory for ``frozen_teacher: train``). Teacher
    weights are copied in here; the runs are checked first (``teachers.py``).
    """
    config = model_config(recipe, num_classes, ignore_label, replicas)
    objective = recipe.objective
    if objective.frozen_teacher is not None:
        from keras_sdmtcnn.models.distillation import FrozenTeacherStudent
        from keras_sdmtcnn.models.saving import load_model_config
        from keras_sdmtcnn.runs.rundir import RunDir
        from keras_sdmtcnn.runs.teachers import check_frozen_teacher

        run_dir = (teacher_runs or {}).get("frozen_teacher", objective.frozen_teacher)
        check_frozen_teacher(recipe, run_dir)
        trained, teacher_config = load_model_config(RunDir(run_dir).model_path)
        if teacher_config["num_classes"] != config["num_classes"]:
            raise UserError(
                f"objective.frozen_teacher: {run_dir} predicts {teacher_config['num_classes']} "
                f"classes, this recipe's data has {config['num_classes']}.")
        teacher_config["synchronized_bn"] = config["synchronized_bn"]
        model = FrozenTeacherStudent(teacher_config, config, name="two_stage")
        model.load_teacher(trained)
        return model
    if objective.feature_teachers:
        from keras_sdmtcnn.models.distillation import FeatureDistillationModel
        from keras_sdmtcnn.models.saving import load_model_config
        from keras_sdmtcnn.runs.rundir import RunDir
        from keras_sdmtcnn.runs.teachers import check_feature_teachers

        check_feature_teachers(recipe)
        trained, configs = {}, {}
        for task, run_dir in objective.feature_teachers.items():
            trained[task], configs[task] = load_model_config(RunDir(run_dir).model_path)
        model = FeatureDistillationModel(config, configs, objective.feature_weights,
                                         objective.feature_levels, name="feature_distilled")
        model.load_teachers(trained)
        return model
    return SDMTCNN(**config, name="sdmtcnn")


def build_optimizer(training, layer_learning_rates=None):
    """The recipe's optimizer; ``layer_learning_rates`` gives some layers their own rate."""
    # Keras' Adam and AdamW with a fused update kernel (optimizers.py).
    rates = dict(layer_learning_rates or {})
    if training.optimizer == "adam":
        return FusedAdam(training.learning_rate, layer_learning_rates=rates)
    if training.optimizer == "adamw":
        return FusedAdamW(training.learning_rate, weight_decay=training.weight_decay,
                          layer_learning_rates=rates)
    return SGD(training.learning_rate, momentum=0.9, layer_learning_rates=rates)


def build_objective(objective):
    return get_objective(
        objective.name,
        kd_weight=objective.kd_weight,
        task_weights=objective.task_weights,
        detach_teacher=objective.detach_teacher,
        temperature=objective.temperature,
        regression_kd=objective.regression_kd,
        distillation=objective.distillation,
        weighting=objective.weighting,
        dwa_temperature=objective.dwa_temperature,
    )


def compiled_model(recipe, num_classes, ignore_label, replicas=1, teacher_runs=None):
    model = build_model(recipe, num_classes, ignore_label, replicas, teacher_runs)
    model.compile(build_optimizer(recipe.training, adaptor_learning_rates(model, recipe)),
                  build_objective(recipe.objective),
                  convention=recipe.evaluation.convention)
    apply_speed(model, recipe.speed)
    return model


def adaptor_learning_rates(model, recipe):
    """``{layer name: learning rate}`` of the layers with their own rate (Li & Bilen's adaptors)."""
    rate = recipe.objective.adaptor_learning_rate
    if rate is None or not hasattr(model, "adaptor_layer_names"):
        return {}
    return {name: rate for name in model.adaptor_layer_names()}
