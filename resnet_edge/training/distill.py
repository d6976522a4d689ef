"""Knowledge distillation (Hinton et al. 2015): the student also learns the softened outputs of trained nets.

``--teacher`` names resnet-edge checkpoints; several make an ensemble whose target is the mean of their
softened outputs. The loss is ``(1 - w) x labels + w x T^2 KL(teacher_T || student_T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..images import ImageFolder
from ..preprocess import PreprocessSpec
from .checkpoint import load_checkpoint, load_weights, spec_from_checkpoint
from .config import TrainConfig
from .data import InMemorySplit, to_input
from .distributed import log
from .nets import create_model
from .runs import check_held_out


def load_teacher(path: str, classes: list[str], side: int, device: torch.device) -> tuple[nn.Module, PreprocessSpec]:
    """A trained resnet-edge checkpoint as a frozen teacher, with the preprocessing it was trained with."""
    state = load_checkpoint(path)
    if "arch" not in state:
        raise UserError(f"--teacher {path}: a bare state_dict; a teacher must be a resnet-edge checkpoint "
                        "(it records the architecture, labels and preprocessing)")
    if list(state["labels"]) != list(classes):
        raise UserError(f"--teacher {path}: its classes {state['labels']} differ from the training data's {classes}")
    spec = spec_from_checkpoint(state)
    if tuple(spec.input_size) != (side, side) or spec.color_order != "RGB":
        raise UserError(f"--teacher {path}: it takes {spec.input_size[0]}x{spec.input_size[1]} {spec.color_order} "
                        f"input, the student {side}x{side} RGB")
    teacher = create_model(state["arch"], num_classes=len(classes), **state.get("model_kwargs", {}))
    load_weights(teacher, state["model"], path)
    teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    return teacher, spec


def ensemble_logits(teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """One teacher's logits as they are; several teachers' as T x log(mean_k softmax(z_k / T)): logits whose
    temperature-T softmax is the mean of theirs, the target Hinton et al. (2015) distil an ensemble into.
    Logits: (B, classes), float32."""
    if len(teacher_logits) == 1:
        return teacher_logits[0]
    log_probs = torch.stack([F.log_softmax(z / temperature, dim=1) for z in teacher_logits])  # (K, B, classes)
    return temperature * (torch.logsumexp(log_probs, dim=0) - math.log(len(teacher_logits)))


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between temperature-softened distributions, times T^2 so that its gradients
    keep their size whatever T is (Hinton et al. 2015). Logits: (B, classes), float32."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


@torch.no_grad()
def teacher_accuracy(teachers: list[tuple[nn.Module, PreprocessSpec]], split: InMemorySplit, device: torch.device,
                     temperature: float, batch_size: int = 500) -> list[float]:
    """Top-1 on ``split`` of each teacher, then (several teachers) of the ensemble target they give together."""
    correct = [0] * (len(teachers) + (len(teachers) > 1))
    for start in range(0, len(split), batch_size):
        images, labels = split.images[start : start + batch_size], split.labels[start : start + batch_size].to(device)
        logits = [teacher.eval()(to_input(images, teacher_spec, device)).float() for teacher, teacher_spec in teachers]
        for i, z in enumerate(logits + [ensemble_logits(logits, temperature)] * (len(teachers) > 1)):
            correct[i] += int((z.argmax(1) == labels).sum())
    return [c / max(len(split), 1) for c in correct]


@dataclass
class Distiller:
    """The teachers of a run and how their target enters the student's loss."""

    paths: list[str]
    teachers: list[tuple[nn.Module, PreprocessSpec]]
    weight: float  # share of the loss from the teachers
    temperature: float
    # per teacher: whether it needs its own input tensor; a teacher trained on the same data normalises as the
    # student does, and then takes the student's own input (set by use_student_spec)
    own_input: list[bool] = field(default_factory=list)

    def use_student_spec(self, spec: PreprocessSpec) -> None:
        self.own_input = [(teacher_spec.mean, teacher_spec.std) != (spec.mean, spec.std)
                          for _, teacher_spec in self.teachers]

    def compile(self) -> None:
        self.teachers = [(torch.compile(teacher), teacher_spec) for teacher, teacher_spec in self.teachers]

    def report_accuracy(self, val_split: InMemorySplit, device: torch.device) -> None:
        """Worth knowing before hours of training: is the target better than the student can get alone?"""
        accuracies = teacher_accuracy(self.teachers, val_split, device, self.temperature)
        together = f", together {100 * accuracies[-1]:.2f}%" if len(self.teachers) > 1 else ""
        log("validation top-1 of the teacher(s): " + ", ".join(f"{path} {100 * acc:.2f}%" for path, acc in
                                                             zip(self.paths, accuracies)) + together)

    def loss(self, label_loss: torch.Tensor, logits: torch.Tensor, images: torch.Tensor, x: torch.Tensor,
             device: torch.device) -> torch.Tensor:
        """The step's loss: ``label_loss`` mixed with matching the teachers. ``images``: the augmented uint8
        batch, ``x``: the student's input made from it, ``logits``: the student's output."""
        with torch.no_grad():
            target = ensemble_logits([teacher(to_input(images, teacher_spec, device) if own else x).float()
                                      for (teacher, teacher_spec), own in zip(self.teachers, self.own_input)],
                                     self.temperature)
        return ((1 - self.weight) * label_loss
                + self.weight * distillation_loss(logits.float(), target, self.temperature))


def load_teachers(config: TrainConfig, classes: list[str], side: int, device: torch.device,
                  val_folder: ImageFolder, val_idx: list[int]) -> Distiller | None:
    """The run's --teacher checkpoints, checked (classes, input, held-out images) before minutes of decoding;
    None without --teacher."""
    if not config.teacher:
        return None
    if not 0.0 <= config.distill_weight <= 1.0 or config.distill_temperature <= 0:
        raise UserError(f"--distill-weight must be in [0, 1] and --distill-temperature > 0, got "
                        f"{config.distill_weight} and {config.distill_temperature}")
    teachers = []
    for path in config.teacher:
        teachers.append(load_teacher(path, classes, side, device))
        check_held_out(Path(path), "teacher", val_folder, val_idx)
    names = " + ".join(f"{path} ({sum(p.numel() for p in net.parameters()):,} parameters)"
                       for path, (net, _) in zip(config.teacher, teachers))
    mean_of = ", the mean of their softened outputs" if len(teachers) > 1 else ""
    log(f"distilling from {names}{mean_of}: loss = {1 - config.distill_weight:g} x labels + "
        f"{config.distill_weight:g} x teacher at T={config.distill_temperature:g}")
    return Distiller(list(config.teacher), teachers, config.distill_weight, config.distill_temperature)
