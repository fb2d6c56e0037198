"""From a recipe to objects: the networks, the method, the trainer, its optimizer and objective.

The networks come from the recipe's ``model`` section whole (a
``ModelConfig``, resolved for the number of replicas); the method from the
``objective`` section (self-distillation, a stage-1 network, or experts);
the weights trained beforehand from their finished runs, checked first
(``runs/pretrained.py``).
"""

import dataclasses

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.process.settings import apply_speed
from keras_sdmtcnn.training.methods import FeatureDistillation, SelfDistillation, TwoStage
from keras_sdmtcnn.training.objectives import get_objective
from keras_sdmtcnn.training.optimizers import SGD, FusedAdam, FusedAdamW
from keras_sdmtcnn.training.trainer import MultiTaskTrainer


def network_config(recipe, num_classes, ignore_label, replicas=1):
    """The ``SDMTCNN`` config of a recipe (BatchNorm synchronised when replicas > 1)."""
    model = recipe.model
    synchronized = model.synchronized_bn if model.synchronized_bn is not None else replicas > 1
    return {"name": "sdmtcnn", "tasks": list(recipe.data.tasks), "num_classes": num_classes,
            "ignore_label": ignore_label, "image_size": list(recipe.data.image_size),
            "model": dataclasses.asdict(dataclasses.replace(model,
                                                            synchronized_bn=synchronized))}


def build_model(recipe, num_classes, ignore_label, replicas=1, pretrained=None):
    """The recipe's trainer, with the weights trained beforehand copied in.

    ``pretrained`` overrides where the stage-1 network comes from (``fit``
    passes stage 1's run directory for ``stage1_network: train``).
    """
    from keras_sdmtcnn.runs.pretrained import check_experts, check_stage1_network
    from keras_sdmtcnn.runs.rundir import RunDir
    from keras_sdmtcnn.training.saving import load_model_config

    config = network_config(recipe, num_classes, ignore_label, replicas)
    objective = recipe.objective
    if objective.stage1_network is not None:
        run_dir = (pretrained or {}).get("stage1_network", objective.stage1_network)
        check_stage1_network(recipe, run_dir)
        trained, stage1 = load_model_config(RunDir(run_dir).model_path)
        if stage1["num_classes"] != num_classes:
            raise UserError(
                f"objective.stage1_network: {run_dir} predicts {stage1['num_classes']} "
                f"classes, this recipe's data has {num_classes}.")
        stage1["model"]["synchronized_bn"] = config["model"]["synchronized_bn"]
        method = TwoStage(stage1, config)
        model = MultiTaskTrainer(method, name="two_stage")
        method.load_stage1(model, trained)
        return model
    if objective.experts:
        check_experts(recipe)
        trained, experts = {}, {}
        for task, run_dir in objective.experts.items():
            trained[task], experts[task] = load_model_config(RunDir(run_dir).model_path)
        method = FeatureDistillation(config, experts, objective.feature_weights,
                                     objective.feature_levels, objective.adaptor_learning_rate,
                                     objective.adaptor_weight_decay)
        model = MultiTaskTrainer(method, name="feature_distilled")
        method.load_experts(model, trained)
        return model
    return MultiTaskTrainer(SelfDistillation(config), name="sdmtcnn")


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
    """The recipe's objective: every field of its section that an objective takes."""
    return get_objective(
        objective.name, kd_weight=objective.kd_weight, task_weights=objective.task_weights,
        detach_teacher=objective.detach_teacher, temperature=objective.temperature,
        regression_kd=objective.regression_kd, distillation=objective.distillation,
        weighting=objective.weighting, dwa_temperature=objective.dwa_temperature)


def compiled_model(recipe, num_classes, ignore_label, replicas=1, pretrained=None):
    """:func:`build_model`, compiled with the recipe's optimizer and objective."""
    model = build_model(recipe, num_classes, ignore_label, replicas, pretrained)
    model.compile(build_optimizer(recipe.training, model.optimizer_settings()),
                  build_objective(recipe.objective), convention=recipe.evaluation.convention)
    apply_speed(model, recipe.speed)
    return model
