"""A frozen, separately trained Teacher distilling into a Student trained from scratch.

This is the paper's Baseline-3 ("traditional knowledge distillation"): the
Teacher (SD-MTCNN's encoder and attention decoders) is trained first, then
frozen, and a Student network of the same architecture as SD-MTCNN's
Student (its own encoder and deconvolution heads) is trained from scratch
with its task losses plus the distillation terms. The same model serves
KDAM's setting, a strong trained multi-task teacher distilling into a
student with the Cauchy-Schwarz terms (``objective.distillation:
cauchy_schwarz``).

:class:`FrozenTeacherStudent` has the same outputs (``{task}_teacher``,
``{task}_student``), objectives, metrics and sub-models as ``SDMTCNN``, so
training, evaluation and export do not change. Its Teacher is not trainable
(``trainable=False``: no gradient, and BatchNorm uses its moving
statistics), so only the Student learns.
"""

import keras
from keras import layers

from keras_sdmtcnn.layers import PACKAGE
from keras_sdmtcnn.model import SDMTCNN
from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training import MultiTaskTrainer

TEACHER_NETWORK = "frozen_teacher"
STUDENT_NETWORK = "student_network"
TEACHER = f"{TEACHER_NETWORK}_teacher"  # the sub-model layers, named by branch_model
STUDENT = f"{STUDENT_NETWORK}_student"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrozenTeacherStudent(MultiTaskTrainer):
    """A frozen Teacher and a separate Student network, trained with one objective.

    Args:
        teacher_config: ``SDMTCNN`` config of the trained model whose Teacher
            branch is used (its weights are copied in with
            :meth:`load_teacher`, or restored from a checkpoint).
        student_config: ``SDMTCNN`` config of the Student network (only its
            encoder and Student heads are built).
    """

    def __init__(self, teacher_config, student_config, **kwargs):
        teacher_config = dict(teacher_config)
        student_config = dict(student_config)
        if teacher_config["tasks"] != student_config["tasks"]:
            raise ValueError(
                f"Teacher tasks {teacher_config['tasks']} differ from the Student's "
                f"{student_config['tasks']}.")
        teacher_net = SDMTCNN(**{**teacher_config, "name": TEACHER_NETWORK})
        teacher = teacher_net.teacher_model()
        teacher.trainable = False
        student_net = SDMTCNN(
            **{**student_config, "branches": ["student"], "name": STUDENT_NETWORK})
        student = student_net.student_model()

        image = keras.Input(shape=teacher_net.inputs[0].shape[1:], name="image")
        t_out, s_out = teacher(image), student(image)
        tasks = list(teacher_config["tasks"])
        outputs = {}
        for task in tasks:
            for branch, out in (("teacher", t_out), ("student", s_out)):
                name = output_name(task, branch)
                outputs[name] = layers.Identity(name=name)(out[name])
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self.teacher_config, self.student_config = teacher_config, student_config
        self.tasks = tasks
        self.num_classes = teacher_net.num_classes
        self.ignore_label = teacher_net.ignore_label
        self.image_size = teacher_net.image_size
        self.branches = ("teacher", "student")

    def load_teacher(self, trained):
        """Copies the Teacher weights of a trained ``SDMTCNN`` (or a model holding one)."""
        from keras_sdmtcnn.teachers import copy_weights

        copy_weights(trained.teacher_model(), self.teacher_model())

    def branch_model(self, branch):
        """The frozen Teacher, or the Student network (its own encoder and heads)."""
        self._check_branch(branch)
        return self.get_layer(TEACHER if branch == "teacher" else STUDENT)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "teacher_config": self.teacher_config, "student_config": self.student_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
