"""Training methods: which networks a trainer holds, how they compose, which terms they add.

A method is a small serialisable object: the configs of its networks and
its own settings. :meth:`Method.compose` builds the networks and composes
them into one graph (a dict of named outputs), which the trainer
(``trainer.py``) trains; :meth:`Method.terms` gives the loss terms the method
adds to the objective's; :meth:`Method.branch_model` the Teacher or Student
to evaluate and ship.

- :class:`SelfDistillation`: SD-MTCNN, one network with both branches
  (its graph is the network's own, so its saved file has the layers of
  0.1 and 0.2).
- :class:`TwoStage`: the paper's Baseline-3 (and KDAM from a separately
  trained network): a frozen stage-1 network's Teacher branch distils
  into a Student network trained from scratch.
- :class:`FeatureDistillation`: Li & Bilen (ECCV-W 2020): the network's
  shared features are pulled, through an adaptor per task, towards those
  of frozen single-task experts (``terms.FeatureDistillation``).

Weights trained beforehand (the stage-1 network, the experts) are copied
in by layer name with :func:`copy_weights`.
"""

import keras
from keras import layers

from keras_sdmtcnn.models.backbone import BOTTLENECK, SegNetBackbone, features_name
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN, feature_output
from keras_sdmtcnn.tasks import output_name

LEVELS = ("middle", "last")


class Method:
    """Base class: a method's networks (their configs) and how they train together."""

    kind = None

    def compose(self):
        """Builds the networks; returns ``(input, {name: output})`` of the trainer's graph."""
        raise NotImplementedError

    def terms(self):
        """The loss terms the method adds to the objective's (none by default)."""
        return []

    def branch_model(self, trainer, branch):
        raise NotImplementedError

    @property
    def network_config(self):
        """The config of the network whose facts (tasks, classes) the trainer takes."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError


class SelfDistillation(Method):
    """SD-MTCNN: Teacher and Student branches of one network, trained together.

    Args:
        network: an ``SDMTCNN`` (trained as it is: the trainer shares its
            layers and weights) or its config (built when composed).
    """

    kind = "self_distillation"

    def __init__(self, network):
        self.network = network if isinstance(network, SDMTCNN) else None
        self.network_config_ = (network.get_config() if self.network is not None
                                else dict(network))

    @property
    def network_config(self):
        return self.network_config_

    def compose(self):
        if self.network is None:
            self.network = SDMTCNN.from_config(self.network_config_)
        return self.network.inputs[0], self.network.output

    def branch_model(self, trainer, branch):
        return self.network.branch_model(branch)

    def get_config(self):
        return {"network": self.network.get_config() if self.network else self.network_config_}


class TwoStage(Method):
    """Baseline-3: a frozen stage-1 network's Teacher and a separate Student network.

    Args:
        stage1: config of the trained network whose Teacher branch is used
            (its weights come from its run: :meth:`load_stage1`).
        student: config of the Student network (only its backbone and
            Student heads are built).
        names: the two networks' names (0.2 named the first ``frozen_teacher``).
    """

    kind = "two_stage"

    def __init__(self, stage1, student, names=("stage1_network", "student_network")):
        self.stage1_config, self.student_config = dict(stage1), dict(student)
        self.names = tuple(names)
        if self.stage1_config["tasks"] != self.student_config["tasks"]:
            raise ValueError(f"The stage-1 network's tasks {self.stage1_config['tasks']} "
                             f"differ from the Student's {self.student_config['tasks']}.")

    @property
    def network_config(self):
        return self.student_config

    def compose(self):
        stage1 = SDMTCNN.from_config(
            {**self.stage1_config, "branches": ["teacher"], "name": self.names[0]})
        teacher = stage1.teacher_model()
        teacher.trainable = False
        student_net = SDMTCNN.from_config(
            {**self.student_config, "branches": ["student"], "name": self.names[1]})
        student = student_net.student_model()
        image = keras.Input(shape=stage1.inputs[0].shape[1:], name="image")
        t_out, s_out = teacher(image), student(image)
        outputs = {}
        for task in stage1.tasks:
            for branch, out in (("teacher", t_out), ("student", s_out)):
                name = output_name(task, branch)
                outputs[name] = layers.Identity(name=name)(out[name])
        return image, outputs

    def branch_model(self, trainer, branch):
        """The frozen stage-1 Teacher, or the Student network (its own backbone and heads)."""
        return trainer.get_layer(f"{self.names[0]}_teacher" if branch == "teacher"
                                 else f"{self.names[1]}_student")

    def load_stage1(self, trainer, trained):
        """Copies the Teacher weights of a trained network (or a trainer holding one)."""
        copy_weights(trained.teacher_model(), self.branch_model(trainer, "teacher"))

    def get_config(self):
        return {"stage1": self.stage1_config, "student": self.student_config,
                "names": list(self.names)}


def backbone_level(level, stages):
    """The backbone output of a distillation level: the bottleneck, or the middle stage.

    The middle is encoder stage ``stages // 2 + 1`` (stage 3 of SegNet's 4)
    before its pooling: the shared encoder's middle layer, counting the
    bottleneck as the last.
    """
    if level == "last":
        return BOTTLENECK
    if level == "middle":
        return features_name(stages // 2 + 1)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")


def expert_features(task, level):
    """Output name of a single-task expert's features at ``level``."""
    return f"{task}{'' if level == 'last' else '_' + level}_expert_features"


class FeatureDistillation(Method):
    """Li & Bilen: an SD-MTCNN whose shared features are pulled towards single-task experts'.

    Args:
        network: config of the multi-task network.
        experts: ``{task: network config}`` of the single-task experts
            (their encoders' weights come from their runs: :meth:`load_experts`).
        weights: ``{task: lambda_t}`` (default 1 for each).
        levels: ``["last"]`` (the bottleneck) or ``["middle", "last"]`` (their Table 4).
        learning_rate, weight_decay: the adaptors' (``None``: the optimizer's rate).
    """

    kind = "feature_distillation"

    def __init__(self, network, experts, weights=None, levels=("last",), learning_rate=None,
                 weight_decay=0.0):
        self.network_config_ = dict(network)
        self.expert_configs = {t: dict(c) for t, c in experts.items()}
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in self.expert_configs}
        self.levels = list(levels)
        if not self.levels or any(level not in LEVELS for level in self.levels):
            raise ValueError(f"levels must be a non-empty list of {LEVELS}, got {self.levels}.")
        self.learning_rate, self.weight_decay = learning_rate, float(weight_decay)
        self.network = None
        self._channels = {}

    @property
    def network_config(self):
        return self.network_config_

    def _backbone_names(self):
        stages = len(self.network_config_.get("model", {}).get("encoder_filters",
                                                                (64, 128, 256, 512)))
        return [backbone_level(level, stages) for level in self.levels]

    def _network_graph(self, backbone_names):
        """``(image, the network's outputs, the named task outputs)``; sets ``self.network``."""
        self.network = net = SDMTCNN.from_config(
            {**self.network_config_, "feature_outputs": backbone_names,
             "name": "multi_task_network"})
        image = keras.Input(shape=net.inputs[0].shape[1:], name="image")
        out = net(image)
        outputs = {n: layers.Identity(name=n)(out[n])
                   for n in (output_name(t, b) for t in net.tasks for b in net.branches)}
        return image, out, outputs

    def compose(self):
        backbone_names = self._backbone_names()
        image, out, outputs = self._network_graph(backbone_names)
        net = self.network
        for name in backbone_names:
            outputs[feature_output(name)] = layers.Identity(name=feature_output(name))(
                out[feature_output(name)])
        for task, config in self.expert_configs.items():
            if task not in net.tasks:
                raise ValueError(f"An expert for {task!r}, which is not in {net.tasks}.")
            encoder = SegNetBackbone(model=config.get("model"), image_size=net.image_size,
                                     name=f"{task}_expert_encoder")
            encoder.trainable = False
            features = encoder(image)
            for level, backbone_name in zip(self.levels, backbone_names):
                name = expert_features(task, level)
                outputs[name] = layers.Identity(name=name)(features[backbone_name])
                self._channels[(task, level)] = features[backbone_name].shape[-1]
        return image, outputs

    def terms(self):
        from keras_sdmtcnn.training.terms import FeatureDistillation as FeatureTerm

        return [FeatureTerm(task, level, feature_output(name), expert_features(task, level),
                            self._channels[(task, level)], self.weights[task],
                            weight_decay=self.weight_decay, learning_rate=self.learning_rate)
                for task in self.expert_configs
                for level, name in zip(self.levels, self._backbone_names())]

    def branch_model(self, trainer, branch):
        """A branch of the multi-task network (no adaptors, no experts)."""
        return trainer.get_layer("multi_task_network").branch_model(branch)

    def load_experts(self, trainer, trained):
        """Copies the backbone weights of trained single-task networks ``{task: model}``."""
        for task, model in trained.items():
            copy_weights(model, trainer.get_layer(f"{task}_expert_encoder"))

    def get_config(self):
        return {"network": self.network_config_, "experts": self.expert_configs,
                "weights": self.weights, "levels": self.levels,
                "learning_rate": self.learning_rate, "weight_decay": self.weight_decay}


METHODS = {cls.kind: cls for cls in (SelfDistillation, TwoStage, FeatureDistillation)}


def method_from_config(config):
    """A method from ``{"kind": ..., **its config}`` (a trainer's saved config)."""
    config = dict(config)
    return METHODS[config.pop("kind")](**config)


def method_config(method):
    return {"kind": method.kind, **method.get_config()}


def _weighted_layers(model):
    """``{name: layer}`` of the layers holding weights, looking inside nested models."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_weighted_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_weights(source, target):
    """Copies the weights of ``source``'s layers into ``target``'s layers of the same name.

    Nested models are looked into on both sides, so a flat model written
    before 0.2 and a model composed of a backbone exchange weights. Every
    weight of ``target`` must be found.
    """
    wanted = _weighted_layers(target)
    copied = 0
    for name, layer in _weighted_layers(source).items():
        if name in wanted:
            wanted[name].set_weights(layer.get_weights())
            copied += len(layer.weights)
    if copied != len(target.weights):
        raise ValueError(
            f"Copied {copied} of {len(target.weights)} weights from {source.name} into "
            f"{target.name}: the architectures differ.")
