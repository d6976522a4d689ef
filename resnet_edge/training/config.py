"""The options of `resnet-edge train`: one dataclass, the single place where their names, defaults, types and
help live. The command's flags are built from it (:func:`add_train_arguments`), and every run writes it to
``config.json``, which ``--resume`` reads back.

No torch here: the CLI builds its parser from this module, and the CLI's runtime commands run without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass

DEFAULT_BATCH_SIZE = 128  # the recipe's global batch, which the learning rate below is for
MIN_STEPS_PER_EPOCH = 4  # with fewer training images than 4 default batches, the batch shrinks to give this many


def option(default, help: str, **argparse_kwargs) -> typing.Any:
    """A field of :class:`TrainConfig` with its ``--flag``'s help (and argparse extras such as choices);
    ``dataclasses.MISSING``: no default, the field must be given."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainConfig:
    data: str = option(dataclasses.MISSING, "folder of class folders: DATA/<class>/<image> (ImageFolder layout)")
    out: str = option(dataclasses.MISSING, "run folder: last.pt, config.json, metrics.csv, curves.png, split.json")
    arch: str | None = option(None, "architecture, e.g. resnet20, resnet56, resnet18, plain20 (default: resnet20, "
                                    "or --init's)")
    val_data: str | None = option(None, "separate validation folder (same classes); else --val-split holds out "
                                        "part of DATA")
    val_split: float = option(0.1, "hold out this share of each class (< 1) or this many images per class (>= 1), "
                                   "seeded")
    epochs: int | None = option(150, "passes over the training split; with --resume the run's own, or more to "
                                     "extend it")
    batch_size: int | None = option(None, f"global batch, shared out over torchrun processes (default: "
                                          f"{DEFAULT_BATCH_SIZE}, fewer where the data holds under "
                                          f"{MIN_STEPS_PER_EPOCH} such batches, so that an epoch has "
                                          f"{MIN_STEPS_PER_EPOCH} steps)")
    lr: float = option(0.1, f"peak learning rate, reached after warm-up (for batch {DEFAULT_BATCH_SIZE}; scale "
                            "linearly)")
    momentum: float = option(0.9, "Nesterov momentum")
    weight_decay: float = option(5e-4, "L2 on conv and linear weights (not BatchNorm or biases)")
    label_smoothing: float = option(0.1, "softens the targets; helps calibration and a little accuracy")
    warmup_epochs: float = option(2.0, "linear warm-up from lr/10, then cosine decay to 0 (at most half of the "
                                       "cosine epochs)")
    crop_padding: int = option(4, "random crop: pad by this many pixels and cut the input size back out")
    cutout: int = option(0, "erase a square of this side per image, in the mean colour (0: off; 16 for CIFAR-10 in "
                            "DeVries & Taylor 2017): regularises nets that overfit")
    input_size: int | None = option(None, "square input side (default: the architecture's, 32 for CIFAR nets, 224 "
                                          "for ImageNet nets)")
    shortcut: str | None = option(None, "CIFAR nets: A zero-pad (paper) or B 1x1 projection (default: --init's, "
                                        "else A)", choices=["A", "B"])
    amp: str = option("auto", "bf16 autocast: auto where it is faster (a GPU with bf16, a CPU with AMX), bf16 "
                              "always, off for fp32", choices=["auto", "bf16", "off"])
    device: str = option("cpu", "where to train", choices=["cpu", "cuda"])
    threads: int = option(0, "torch intra-op threads per process (0: cores / processes)")
    compile: bool = option(False, "torch.compile the training step (Inductor; needs a C++ compiler, a minute or "
                                  "two of compiling): speed only, may be switched on or off when resuming")
    seed: int = option(0, "model init, the split, shuffling and augmentation all derive from it")
    init: str | None = option(None, "fine-tune: start from these weights (a run's last.pt or a torchvision-style "
                                    "state_dict, e.g. resnet18 ImageNet weights you have); a new classifier when "
                                    "the classes differ. Use a smaller --lr, e.g. 0.01", metavar="CHECKPOINT")
    teacher: list[str] | None = option(None, "knowledge distillation: also learn a trained net's softened outputs "
                                             "(e.g. a ResNet-56's last.pt for a ResNet-20 to ship); same classes "
                                             "and input size. Repeat it to distill an ensemble: the mean of the "
                                             "teachers' softened outputs", metavar="CHECKPOINT")
    distill_weight: float = option(0.9, "share of the loss from matching the teacher (Hinton et al. 2015), the "
                                        "rest from the labels")
    distill_temperature: float = option(4.0, "softmax temperature: softens both distributions so that the "
                                             "teacher's near-misses carry signal")
    swa_epochs: int = option(0, "stochastic weight averaging: the last N epochs run at a constant --swa-lr and the "
                                "average of their weights is what last.pt holds (0: off)")
    swa_lr: float = option(0.02, "learning rate of the averaging epochs (the cosine before them ends here instead "
                                 "of at 0)")


# The flags of `resnet-edge train` that are not options of the run itself
RUN_FLAGS = {
    "resume": "continue OUT from its last.pt with the run's own options (--epochs may extend it, --compile may "
              "change)",
    "force": "start over in an existing run folder",
    "no_progress": "no progress bars (logs only)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `resnet-edge train`, one per :class:`TrainConfig` field. A flag left out is absent from the
    parsed namespace (not set to its default), so :func:`config_from_args` knows what was given."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind, extra = hints[field.name], dict(field.metadata)
        help_text = extra.pop("help")
        if field.name == "data":
            parser.add_argument("data", help=help_text)
            continue
        if field.name == "out":
            parser.add_argument("--out", required=True, help=help_text)
            continue
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: the flag takes an X
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if kind is bool:
            parser.add_argument(_flag(field.name), action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        if typing.get_origin(kind) is list:  # a repeatable flag
            extra.update(action="append", type=typing.get_args(kind)[0])
        else:
            extra.update(type=kind)
        if field.default is not None and "(default" not in help_text:
            help_text += f" (default {field.default:g})" if isinstance(field.default, float) else \
                f" (default {field.default})"
        parser.add_argument(_flag(field.name), default=argparse.SUPPRESS, help=help_text, **extra)
    for name, help_text in RUN_FLAGS.items():
        parser.add_argument(_flag(name), action="store_true", help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the flags given; the fields' defaults for the rest. With ``--resume`` the run's own
    config.json decides instead (see ``train``), so there epochs stays None unless --epochs was given."""
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)
             if hasattr(args, field.name)}
    if getattr(args, "resume", False):
        given.setdefault("epochs", None)  # not the default 150: that would silently extend the run's schedule
    return TrainConfig(**given)
