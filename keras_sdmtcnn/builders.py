"""From recipe sections to objects: the model, its optimizer and its objective."""

import keras

from keras_sdmtcnn.model import SDMTCNN
from keras_sdmtcnn.objectives import get_objective


def build_model(recipe, num_classes, ignore_label, replicas=1):
    m = recipe.model
    synchronized = m.synchronized_bn if m.synchronized_bn is not None else replicas > 1
    return SDMTCNN(
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
        name="sdmtcnn",
    )


def build_optimizer(training):
    if training.optimizer == "adam":
        return keras.optimizers.Adam(training.learning_rate)
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay)
    return keras.optimizers.SGD(training.learning_rate, momentum=0.9)


def build_objective(objective):
    return get_objective(
        objective.name,
        kd_weight=objective.kd_weight,
        task_weights=objective.task_weights,
        detach_teacher=objective.detach_teacher,
        temperature=objective.temperature,
        regression_kd=objective.regression_kd,
    )


def compiled_model(recipe, num_classes, ignore_label, replicas=1):
    model = build_model(recipe, num_classes, ignore_label, replicas)
    model.compile(build_optimizer(recipe.training), build_objective(recipe.objective))
    return model
