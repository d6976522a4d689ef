"""`resnet-edge train`: train a registered network on a folder of class folders.

Recipe (defaults): SGD with Nesterov momentum, weight decay on conv/linear weights only, label
smoothing, linear warm-up then cosine decay per step, bf16 autocast where the CPU has it, channels_last
memory, a fixed seed. Every epoch writes ``last.pt`` atomically plus a CSV row and a PNG of the curves;
``--resume`` continues from ``last.pt`` and reaches the same weights as an uninterrupted run, because
each epoch's shuffling and augmentation come from a generator seeded by (seed, epoch).

Runs unchanged under ``torchrun --nproc_per_node=N``: each process takes its share of every global
batch, gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on CUDA), rank 0 writes.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..atomicio import atomic_path, write_text_atomic
from ..errors import UserError
from ..images import ImageFolder
from ..preprocess import PreprocessSpec, default_spec
from .checkpoint import check_architecture, load_checkpoint, load_weights, save_checkpoint, spec_from_checkpoint
from .data import InMemorySplit, augment_batch, load_split, split_per_class, to_input
from .nets import create_model, model_spec


@dataclass
class TrainConfig:
    data: str  # folder of class folders: data/<class>/<image>
    out: str  # run folder: last.pt, config.json, metrics.csv, curves.png, split.json
    arch: str | None = None  # registry name (resnet20..110, resnet18..152, plain twins); None: --init's, else resnet20
    val_data: str | None = None  # a separate validation folder; else --val-split holds out part of data
    val_split: float = 0.1  # held-out share per class (< 1) or images per class (>= 1), seeded
    epochs: int | None = 150  # passes over the training split; None with resume: the run's own
    batch_size: int = 128  # global batch, shared out over torchrun processes
    lr: float = 0.1  # peak learning rate, reached after warm-up (for batch 128; scale linearly)
    momentum: float = 0.9  # Nesterov momentum
    weight_decay: float = 5e-4  # L2 on conv and linear weights (not BN or biases)
    label_smoothing: float = 0.1  # softens targets; helps calibration and a little accuracy
    warmup_epochs: float = 2.0  # linear warm-up from lr/10, then cosine decay to 0
    crop_padding: int = 4  # random crop: pad by this many pixels and cut the input size back out
    cutout: int = 0  # side of a square erased per image (mean colour; 0 = off): regularises nets that overfit
    input_size: int | None = None  # square input side; None = the architecture's default (32 or 224)
    shortcut: str | None = None  # CIFAR nets only: "A" zero-pad (paper), "B" 1x1 projection; None: --init's, else A
    amp: str = "auto"  # "bf16" autocast, "off", or "auto" (bf16 where it is faster: see bf16_kernels)
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 0  # torch intra-op threads per process; 0 = cores / processes
    compile: bool = False  # torch.compile the nets of the training step (Inductor): speed only, may change on resume
    seed: int = 0  # model init, the split, shuffling and augmentation all derive from it
    init: str | None = None  # fine-tuning: start from these weights (our checkpoint or a torchvision-style state_dict)
    teacher: list[str] | None = None  # checkpoints of trained nets (e.g. a ResNet-56) the student also learns from;
    # several: an ensemble, the mean of their softened outputs
    distill_weight: float = 0.9  # share of the loss from matching the teacher (Hinton et al. 2015); rest: labels
    distill_temperature: float = 4.0  # softens both distributions so the teacher's near-misses carry signal
    swa_epochs: int = 0  # the last N epochs run at a constant swa_lr and ship the average of their weights; 0 = off
    swa_lr: float = 0.02  # learning rate of those epochs (the cosine before them ends here instead of at 0)


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _log(message: str) -> None:
    if _is_main():
        print(message, file=sys.stderr, flush=True)


def bf16_kernels(device: torch.device) -> str:
    """How this device computes bf16: "native" (a GPU with bf16; a CPU whose oneDNN kernels run on AMX tiles),
    "slow" (oneDNN's AVX512-BF16 kernels without AMX), or "none" (emulated)."""
    if device.type == "cuda":
        return "native" if torch.cuda.is_bf16_supported() else "none"
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "none"
    # Without AMX the casts around every op cost more than AVX512-BF16's dot products save on nets this small:
    # a ResNet-56 distillation step took 1.07-1.20 s in bf16 against 0.72 s in fp32 on such a Xeon (see the
    # README's training-speed table for the side-by-side benchmark)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "native" if amx else "slow"


def autocast_bf16(amp: str, device: torch.device) -> bool:
    """Whether the training step runs under bf16 autocast: ``--amp bf16``, or ``auto`` where bf16 is faster."""
    return amp == "bf16" or (amp == "auto" and bf16_kernels(device) == "native")


def precision_note(amp: str, kernels: str, device: torch.device) -> str:
    """What the training step computes in, and why (``kernels``: :func:`bf16_kernels`)."""
    if amp == "off":
        return "fp32 (--amp off)"
    cpu = device.type == "cpu"
    if kernels == "native":
        return "bf16 autocast" + (" (oneDNN runs bf16 on this CPU's AMX tiles)" if cpu else "")
    if amp == "bf16":
        if kernels == "slow":
            return "bf16 autocast, though without AMX oneDNN's bf16 trains slower than fp32 here (--amp auto: fp32)"
        return "bf16 autocast, though this device has no bf16 kernels (emulated; --amp auto would train in fp32)"
    if kernels == "slow":
        return ("fp32: this CPU has AVX512-BF16 but no AMX, where bf16 autocast trains slower than fp32 "
                "(--amp bf16 forces it)")
    where = "this CPU lacks the AVX-512/AMX instructions of oneDNN's bf16 kernels" if cpu else "this GPU has no bf16"
    return f"fp32: {where}, so training runs at fp32 speed"


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up from peak/10 to peak, then half-cosine down to ``floor`` at total_steps."""
    if step < warmup_steps:
        return peak * (0.1 + 0.9 * step / max(1, warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


class WeightAverage:
    """Stochastic weight averaging (Izmailov et al. 2018): the equal-weight mean of the weights SGD reaches at
    the end of each epoch at a constant learning rate. The mean lies in a flatter part of the loss surface than
    any one of them, which generalises better. Its BatchNorm statistics belong to none of the averaged nets,
    so they are measured again on the training images before it is evaluated or saved."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.count = 0  # epochs averaged so far

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        for mean, current in zip(self.model.parameters(), model.parameters()):
            mean.lerp_(current.detach().to(mean.dtype), 1.0 / (self.count + 1))  # mean += (current - mean) / n
        self.count += 1

    @torch.no_grad()
    def measure_batchnorm(self, split: InMemorySplit, augment: Callable[[torch.Tensor], torch.Tensor],
                          spec: PreprocessSpec, device: torch.device, use_bf16: bool, batch_size: int,
                          generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        """Running mean/var of every BN layer, averaged over one pass of training batches shuffled and augmented
        as in training: the statistics the weights were trained under. (Clean images give other statistics, and
        cost 4 points of validation accuracy on a ResNet-20 with cutout here. Unshuffled batches, one class each
        since a split is stored class by class, miss the variance between classes: 91.58% instead of 92.54% on
        a ResNet-56.) Under torchrun each rank measures every world-th batch of the same order (``generator`` is
        seeded alike on every rank) and the ranks' means are averaged: the same statistics, 1/world of the work."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # None: a cumulative average over all batches, not an exponential one
        self.model.train()
        order = torch.randperm(len(split), generator=generator)
        starts = range(0, len(split) - batch_size + 1, batch_size)
        starts = starts[: len(starts) - len(starts) % world]  # as many batches on every rank: their means weigh equally
        for start in starts[rank::world]:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                self.model(to_input(augment(split.images[order[start : start + batch_size]]), spec, device))
        for norm in norms:
            if world > 1:
                for statistic in (norm.running_mean, norm.running_var):
                    dist.all_reduce(statistic)
                    statistic /= world
            norm.momentum = 0.1
        self.model.eval()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim > 1 else no_decay).append(param)  # conv/linear weights vs BN and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device_name == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world, torch.device("cuda", local_rank)
    if device_name != "cpu":
        raise UserError(f"--device must be 'cpu' or 'cuda', got {device_name!r}")
    return rank, world, torch.device("cpu")


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, split: InMemorySplit, spec: PreprocessSpec, device: torch.device,
             rank: int = 0, world: int = 1, batch_size: int = 500) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) over the split in fp32, sharded over processes."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    for start in range(rank * batch_size, len(split), batch_size * world):
        x = to_input(split.images[start : start + batch_size], spec, device)
        y = split.labels[start : start + batch_size].to(device)
        logits = model(x).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], device)
    return loss_sum / max(count, 1), correct / max(count, 1)


def _plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(epochs, [100 * row["train_acc"] for row in rows], label="train")
    ax_acc.plot(epochs, [100 * row["val_acc"] for row in rows], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Accuracy")
    ax_loss.plot(epochs, [row["train_loss"] for row in rows], label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in rows], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _write_metrics(rows: list[dict], out: Path) -> None:
    with atomic_path(out / "metrics.csv", force=True) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    _plot_curves(rows, out / "curves.png")


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


def _check_held_out(checkpoint: Path, role: str, val_folder: ImageFolder, val_idx: list[int]) -> None:
    """Weights that trained on this run's validation images leak them: a teacher's soft labels and an --init
    checkpoint's weights carry what was memorised, and validation accuracy reads too high. Compare with the
    split.json of the run that wrote the checkpoint."""
    ours = {str(Path(val_folder.samples[i][0]).relative_to(val_folder.root)) for i in val_idx}
    split_file = checkpoint.parent / "split.json"
    try:
        theirs = set(json.loads(split_file.read_text())["val_files"])
    except (OSError, ValueError, KeyError, TypeError):
        _log(f"warning: no split.json beside {checkpoint}: cannot check that the {role} never trained on this "
             "run's validation images")
        return
    if ours <= theirs:
        _log(f"{role} held out all {len(ours)} of this run's validation images too")
    else:
        _log(f"warning: the {role}'s run did not hold out {len(ours - theirs)} of this run's {len(ours)} validation "
             "images: if it trained on them, validation accuracy here reads too high")


def resolve_init(config: TrainConfig) -> tuple[TrainConfig, dict | None]:
    """Fill in the architecture and shortcut; with --init, read the checkpoint, whose own architecture wins.

    Returns the config with arch and shortcut set, and the loaded --init checkpoint (None without --init).
    """
    state = load_checkpoint(config.init) if config.init else None
    arch, shortcut = config.arch, config.shortcut
    if state is not None and "arch" in state:  # ours: it says what it is
        theirs = state["arch"], state.get("model_kwargs", {}).get("shortcut", "A")
        if arch not in (None, theirs[0]):
            raise UserError(f"--init {config.init} holds a {theirs[0]}, not a {arch} (leave out --arch, or use --arch "
                            f"{theirs[0]})")
        if shortcut not in (None, theirs[1]) and model_spec(theirs[0]).layout == "cifar":
            raise UserError(f"--init {config.init} has type-{theirs[1]} shortcuts, not type {shortcut}")
        arch, shortcut = theirs
    config = dataclasses.replace(config, arch=arch or "resnet20", shortcut=shortcut or "A")
    if state is not None:  # shapes against the architecture before any network is built (meta device)
        kwargs = {"shortcut": config.shortcut} if model_spec(config.arch).layout == "cifar" else {}
        check_architecture(config.arch, state["model"], f"--init {config.init}", kwargs)
    return config, state


def load_init_weights(model: nn.Module, state: dict, path: str, classes: list[str]) -> None:
    """Fine-tuning start: every weight from the checkpoint; a new classifier (``fc``) when the classes differ.

    Our checkpoints name their classes, so the head is kept only for the same classes in the same order; a bare
    state_dict does not, so its head is kept when it has as many outputs as there are classes.
    """
    weights = dict(state["model"])
    head = weights.get("fc.weight")
    if "labels" in state:
        same_classes = list(state["labels"]) == list(classes)
        theirs = f"its {len(state['labels'])} classes differ" if not same_classes else ""
    else:
        same_classes = head is not None and head.shape[0] == len(classes)
        theirs = f"it has {head.shape[0] if head is not None else 'no'} outputs" if not same_classes else ""
    if not same_classes:  # keep the freshly initialised head of the right size
        weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
        weights.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
    load_weights(model, weights, path)
    if same_classes:
        _log(f"starting from {path}: all {len(weights)} tensors, classifier included")
    else:
        _log(f"starting from {path}: all but the classifier ({theirs}); a new one for {len(classes)} classes")


def ensemble_logits(teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """One teacher's logits as they are; several teachers' as T x log(mean_k softmax(z_k / T)): logits whose
    temperature-T softmax is the mean of theirs, the target Hinton et al. (2015) distil an ensemble into.
    Logits: (B, classes), float32."""
    if len(teacher_logits) == 1:
        return teacher_logits[0]
    log_probs = torch.stack([F.log_softmax(z / temperature, dim=1) for z in teacher_logits])  # (K, B, classes)
    return temperature * (torch.logsumexp(log_probs, dim=0) - math.log(len(teacher_logits)))


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


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between temperature-softened distributions, times T^2 so that its gradients
    keep their size whatever T is (Hinton et al. 2015). Logits: (B, classes), float32."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


@contextmanager
def ctrl_c_between_steps(enabled: bool = True) -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag the loop checks at safe points; yields "was Ctrl-C pressed?".

    A KeyboardInterrupt raised wherever the signal lands can surface as another error: inside an import
    (matplotlib's first import, mid class body, turns it into a RuntimeError), a C extension or a checkpoint
    write. So the loop stops only between steps and after an epoch's files are written. A second Ctrl-C
    raises at once, as if the flag were not there.
    """
    pressed = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    # off the main thread signals cannot be handled; SIG_IGN means the process was started not to take Ctrl-C
    if not enabled or threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield pressed.is_set
        return

    def on_sigint(signum, frame):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()
        _log("\nCtrl-C: stopping after this step (press again to stop at once)")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_compiler(device: torch.device) -> None:
    """Inductor writes C++ for CPU kernels: without a compiler torch.compile fails at the first step, deep inside."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++", "cl")
                                        if c):
        raise UserError("--compile needs a C++ compiler on PATH (g++, clang++ or MSVC's cl); none found: install one "
                        "or train without --compile")


def prepare_run_folder(config: TrainConfig, resume: bool, force: bool) -> Path:
    out = Path(config.out)
    if resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"{out}/last.pt not found: nothing to resume")
        return out
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"run folder {out} already exists; use --resume to continue it or --force to start over")
    return out


def train(config: TrainConfig, resume: bool = False, force: bool = False, show_progress: bool = True) -> dict:
    """Train per ``config``; returns the final row of metrics. Raises UserError for bad input."""
    rank, world, device = _setup_distributed(config.device)
    threads = config.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    out = prepare_run_folder(config, resume, force)
    init_state = None
    if resume:  # the weights come from last.pt; --init only mattered for the first epoch
        previous = json.loads((out / "config.json").read_text())
        previous.update(compile=config.compile)  # may be sped up, and extended (below); nothing else changes
        if config.epochs is not None:
            previous.update(epochs=config.epochs)
        config = TrainConfig(**{k: v for k, v in previous.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}})
        if isinstance(config.teacher, str):  # runs from before --teacher could be repeated
            config = dataclasses.replace(config, teacher=[config.teacher])
        config = dataclasses.replace(config, arch=config.arch or "resnet20", shortcut=config.shortcut or "A")
    else:
        config, init_state = resolve_init(config)  # checked before minutes of decoding
    if config.epochs is None or config.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {config.epochs}")
    if config.compile:
        _check_compiler(device)
    if not 0 <= config.swa_epochs <= config.epochs or config.swa_lr <= 0:
        raise UserError(f"--swa-epochs must be in [0, --epochs] and --swa-lr > 0, got {config.swa_epochs} and "
                        f"{config.swa_lr}")

    spec_entry = model_spec(config.arch)
    side = config.input_size or spec_entry.default_input_size
    folder = ImageFolder.scan(config.data)
    if config.val_data:
        val_folder = ImageFolder.scan(config.val_data)
        if val_folder.classes != folder.classes:
            raise UserError(f"validation classes {val_folder.classes} differ from training classes {folder.classes}")
        train_idx, val_idx = list(range(len(folder.samples))), list(range(len(val_folder.samples)))
    else:
        val_folder = folder
        train_idx, val_idx = split_per_class([label for _, label in folder.samples], config.val_split, config.seed)

    # the teachers are checked before minutes of decoding
    teachers: list[tuple[nn.Module, PreprocessSpec]] = []
    if config.teacher:
        if not 0.0 <= config.distill_weight <= 1.0 or config.distill_temperature <= 0:
            raise UserError(f"--distill-weight must be in [0, 1] and --distill-temperature > 0, got "
                            f"{config.distill_weight} and {config.distill_temperature}")
        for path in config.teacher:
            teachers.append(load_teacher(path, folder.classes, side, device))
            _check_held_out(Path(path), "teacher", val_folder, val_idx)
        names = " + ".join(f"{path} ({sum(p.numel() for p in net.parameters()):,} parameters)"
                           for path, (net, _) in zip(config.teacher, teachers))
        mean_of = ", the mean of their softened outputs" if len(teachers) > 1 else ""
        _log(f"distilling from {names}{mean_of}: loss = {1 - config.distill_weight:g} x labels + "
             f"{config.distill_weight:g} x teacher at T={config.distill_temperature:g}")

    torch.manual_seed(config.seed)
    extra = {"shortcut": config.shortcut} if spec_entry.layout == "cifar" else {}
    model = create_model(config.arch, num_classes=len(folder.classes), **extra)
    if init_state is not None:  # like the teacher, checked before decoding
        load_init_weights(model, init_state, config.init, folder.classes)
        _check_held_out(Path(config.init), "--init checkpoint", val_folder, val_idx)

    # Geometry first (mean/std are not used by fit_frame); normalisation constants come from the data.
    geometry = PreprocessSpec(input_size=(side, side), crop_ratio=1.0)
    train_split, skipped_train = load_split(folder, train_idx, geometry, "decoding train", show_progress and _is_main())
    val_split, skipped_val = load_split(val_folder, val_idx, geometry, "decoding val", show_progress and _is_main())
    if len(train_split) == 0 or len(val_split) == 0:
        raise UserError(f"no readable images left (train {len(train_split)}, validation {len(val_split)})")
    if resume:
        state = load_checkpoint(out / "last.pt")
        mean, std = tuple(state["preprocess"]["mean"]), tuple(state["preprocess"]["std"])
    elif init_state is not None:
        # pretrained features expect the normalisation they were trained with; a bare state_dict does not say
        # which, so the layout's usual one (ImageNet statistics for torchvision's ImageNet nets)
        trained_with = spec_from_checkpoint(init_state) if "preprocess" in init_state else default_spec(spec_entry.layout)
        mean, std = trained_with.mean, trained_with.std
    else:
        pixels = train_split.images.reshape(-1, 3).float() / 255.0
        mean, std = tuple(pixels.mean(0).tolist()), tuple(pixels.std(0).tolist())
        del pixels
    spec = PreprocessSpec(input_size=(side, side), mean=mean, std=std, color_order="RGB", crop_ratio=1.0)
    cutout_fill = tuple(round(255 * m) for m in mean)  # the mean colour: 0 after normalisation
    # a teacher trained on the same data normalises as the student does: its input is then the student's own
    own_input = [(teacher_spec.mean, teacher_spec.std) != (spec.mean, spec.std) for _, teacher_spec in teachers]
    if teachers and _is_main():  # worth knowing before hours of training: is the target better than the student?
        accuracies = teacher_accuracy(teachers, val_split, device, config.distill_temperature)
        together = f", together {100 * accuracies[-1]:.2f}%" if len(teachers) > 1 else ""
        _log("validation top-1 of the teacher(s): " + ", ".join(f"{path} {100 * acc:.2f}%" for path, acc in
                                                              zip(config.teacher, accuracies)) + together)
    _log(f"data: {len(train_split)} train / {len(val_split)} validation images, {len(folder.classes)} classes, "
         f"skipped {skipped_train + skipped_val} unreadable; {world} process(es) x {threads} thread(s) on {device}")

    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=True)
    rows: list[dict] = []
    start_epoch = 0
    average = WeightAverage(model) if config.swa_epochs else None
    if resume:
        model.load_state_dict(state.get("trained_model", state["model"]))
        if average is not None and "trained_model" in state:  # stopped inside the averaging epochs
            average.model.load_state_dict(state["model"])
            average.count = int(state["averaged_epochs"])
        optimizer.load_state_dict(state["optimizer"])
        rows = list(state["history"])
        start_epoch = int(state["epoch"])
        _log(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    if config.compile:  # fuses BN/ReLU/add around the convolutions; checkpoints still come from the plain `model`
        _log("torch.compile: the first steps compile the network (a minute or two), then run faster")
        net = torch.compile(net)
        teachers = [(torch.compile(teacher), teacher_spec) for teacher, teacher_spec in teachers]

    if config.amp not in ("auto", "bf16", "off"):
        raise UserError(f"--amp must be auto, bf16 or off, got {config.amp!r}")
    use_bf16 = autocast_bf16(config.amp, device)
    _log(f"precision: {precision_note(config.amp, bf16_kernels(device), device)}")
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    steps_per_epoch = len(train_split) // config.batch_size  # drop the ragged last batch
    if steps_per_epoch < 1:
        raise UserError(f"batch size {config.batch_size} is larger than the {len(train_split)} training images")
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    # warm-up and cosine over the epochs before the averaging ones (all epochs without SWA); the cosine ends at
    # lr_floor, which the averaging epochs then keep
    cosine_steps = steps_per_epoch * (config.epochs - config.swa_epochs)
    lr_floor = config.swa_lr if config.swa_epochs else 0.0
    if config.swa_epochs:
        _log(f"weight averaging (SWA): the last {config.swa_epochs} epochs at lr {config.swa_lr:g}, their weights "
             "averaged")

    if _is_main():
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2), force=True)
        # the root absolute: `verify --split` and quantize's --calib-exclude read it from other folders
        write_text_atomic(out / "split.json", json.dumps({"classes": folder.classes,
                                                           "val_root": str(val_folder.root.resolve()),
                                                           "val_files": val_split.files}), force=True)
    row: dict = rows[-1] if rows else {}
    # one process: Ctrl-C stops between steps; under torchrun the ranks would see it at different steps and
    # hang in the all-reduce, so there it interrupts at once and torchrun ends the group
    with ctrl_c_between_steps(enabled=world == 1) as ctrl_c_pressed:
        try:
            for epoch in range(start_epoch, config.epochs):
                generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
                order = torch.randperm(len(train_split), generator=generator)
                net.train()
                loss_sum, correct, seen = 0.0, 0.0, 0.0
                started = time.perf_counter()
                bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           disable=not (show_progress and _is_main()), file=sys.stderr, dynamic_ncols=True)
                for step in bar:
                    global_step = epoch * steps_per_epoch + step
                    lr = (learning_rate(global_step, cosine_steps, warmup_steps, config.lr, lr_floor)
                          if global_step < cosine_steps else lr_floor)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    batch_idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                    images = augment_batch(train_split.images[batch_idx], config.crop_padding, generator,
                                           config.cutout, cutout_fill)
                    # every process draws the whole batch's augmentation (same generator) and keeps its share
                    images, labels = images[rank::world], train_split.labels[batch_idx][rank::world].to(device)
                    x = to_input(images, spec, device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        logits = net(x)
                        loss = criterion(logits.float(), labels)
                        if teachers:
                            with torch.no_grad():
                                teacher_logits = ensemble_logits(
                                    [teacher(to_input(images, teacher_spec, device) if own else x).float()
                                     for (teacher, teacher_spec), own in zip(teachers, own_input)],
                                    config.distill_temperature)
                            loss = ((1 - config.distill_weight) * loss + config.distill_weight
                                    * distillation_loss(logits.float(), teacher_logits, config.distill_temperature))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item() * len(labels)
                    correct += (logits.argmax(1) == labels).sum().item()
                    seen += len(labels)
                    if step % 10 == 0 or step == steps_per_epoch - 1:
                        rate = seen * world / (time.perf_counter() - started)
                        bar.set_postfix_str(f"{rate:.0f} img/s loss {loss_sum / seen:.3f} acc {100 * correct / seen:.1f}%")
                    if ctrl_c_pressed():
                        raise KeyboardInterrupt
                bar.close()
                loss_sum, correct, seen = _all_reduce_sum([loss_sum, correct, seen], device)
                seconds = time.perf_counter() - started
                shipped = model  # what last.pt's "model" holds and validation measures
                if average is not None and epoch >= config.epochs - config.swa_epochs:
                    average.add(model)
                    bn_generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 50_000)
                    average.measure_batchnorm(
                        train_split, lambda images: augment_batch(images, config.crop_padding, bn_generator,
                                                                  config.cutout, cutout_fill),
                        spec, device, use_bf16, config.batch_size, bn_generator, rank, world)
                    shipped = average.model
                val_loss, val_acc = evaluate(shipped, val_split, spec, device, rank, world)
                row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
                       "train_acc": correct / seen, "val_loss": val_loss, "val_acc": val_acc,
                       "epoch_seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 1)}
                rows.append(row)
                averaged = f" (average of {average.count} epoch{'s' * (average.count > 1)})" if shipped is not model else ""
                _log(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | "
                     f"val{averaged} loss {val_loss:.4f} acc {100 * val_acc:.2f}% | {seconds:.0f}s, "
                     f"{row['images_per_second']:.0f} img/s")
                if _is_main():
                    save_checkpoint(out / "last.pt", shipped, optimizer, epoch + 1, config, folder.classes, spec, rows,
                                    trained=model if shipped is not model else None,
                                    averaged_epochs=average.count if average is not None else 0)
                    _write_metrics(rows, out)
                if dist.is_initialized():
                    dist.barrier()
                if ctrl_c_pressed() and epoch + 1 < config.epochs:  # pressed in validation or while writing
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            done = rows[-1]["epoch"] if rows else 0
            _log(f"\ninterrupted: {out}/last.pt holds epoch {done}; continue with --resume")
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    return row
