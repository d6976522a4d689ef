"""`resnet-edge train`: train a registered network on a folder of class folders.

Recipe (defaults, see config.TrainConfig): SGD with Nesterov momentum, weight decay on conv/linear weights
only, label smoothing, linear warm-up then cosine decay per step, bf16 autocast where it is faster,
channels_last memory, a fixed seed. Every epoch writes ``last.pt`` atomically plus a CSV row and a PNG of the
curves; ``--resume`` continues from ``last.pt`` and reaches the same weights as an uninterrupted run, because
each epoch's shuffling and augmentation come from a generator seeded by (seed, epoch).

Runs unchanged under ``torchrun --nproc_per_node=N``: each process takes its share of every global
batch, gradients are averaged by DistributedDataParallel (gloo on CPU, nccl on CUDA), rank 0 writes.
Distillation lives in distill.py, weight averaging in swa.py, the run folder's files in runs.py.
"""

from __future__ import annotations

import dataclasses
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
from tqdm import tqdm

from ..errors import UserError
from ..images import ImageFolder
from ..preprocess import PreprocessSpec, default_spec
from .checkpoint import check_architecture, load_checkpoint, load_weights, save_checkpoint, spec_from_checkpoint
from .config import DEFAULT_BATCH_SIZE, MIN_STEPS_PER_EPOCH, TrainConfig
from .data import InMemorySplit, augment_batch, load_split, split_per_class, to_input
from .distill import load_teachers
from .distributed import all_reduce_sum, is_main, log, setup_distributed
from .nets import create_model, model_spec
from .runs import (check_held_out, is_finished, prepare_run_folder, restore_run, resumed_config, write_metrics,
                   write_run_files)
from .swa import WeightAverage


def bf16_kernels(device: torch.device) -> str:
    """How this device computes bf16: "native" (a GPU with bf16; a CPU whose oneDNN kernels run on AMX tiles),
    "slow" (oneDNN's AVX512-BF16 kernels without AMX), or "none" (emulated)."""
    if device.type == "cuda":
        return "native" if torch.cuda.is_bf16_supported() else "none"
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "none"
    # Without AMX the casts around every op cost more than AVX512-BF16's dot products save on nets this small
    # (benchmarks/train_throughput.py times both precisions)
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


@dataclass
class Schedule:
    """The learning rate of every step: warm-up and cosine over the epochs before the averaging ones (all epochs
    without SWA), ending at ``floor``, which the averaging epochs then keep."""

    peak: float
    warmup_steps: int
    cosine_steps: int
    floor: float

    @classmethod
    def of(cls, config: TrainConfig, steps_per_epoch: int) -> Schedule:
        return cls(config.lr, int(config.warmup_epochs * steps_per_epoch),
                   steps_per_epoch * (config.epochs - config.swa_epochs), config.swa_lr if config.swa_epochs else 0.0)

    def __call__(self, step: int) -> float:
        if step >= self.cosine_steps:
            return self.floor
        return learning_rate(step, self.cosine_steps, self.warmup_steps, self.peak, self.floor)


def fit_to_data(config: TrainConfig, train_images: int) -> TrainConfig:
    """The batch size and warm-up a new run trains with (recorded in its config.json), said in the log.

    No --batch-size: DEFAULT_BATCH_SIZE, or fewer where the data holds fewer than MIN_STEPS_PER_EPOCH such
    batches: a small folder (180 images) would otherwise give one step per epoch (the ragged batch is dropped),
    and a schedule of a handful of steps. A batch given is kept. The warm-up takes at most half of the epochs
    before the averaging ones, so that a short run is not all warm-up."""
    batch_size = config.batch_size
    if batch_size is None:
        batch_size = max(1, min(DEFAULT_BATCH_SIZE, train_images // MIN_STEPS_PER_EPOCH))
        if batch_size < DEFAULT_BATCH_SIZE:
            log(f"batch {batch_size}, not {DEFAULT_BATCH_SIZE}: {train_images} training images give "
                f"{train_images // batch_size} steps per epoch (--batch-size sets it)")
    elif batch_size > train_images:
        raise UserError(f"batch size {batch_size} is larger than the {train_images} training images")
    elif train_images // batch_size < MIN_STEPS_PER_EPOCH:
        log(f"warning: --batch-size {batch_size} gives {train_images // batch_size} step(s) per epoch of the "
            f"{train_images} training images; leave it out to fit the batch to the data")
    cosine_epochs, warmup = config.epochs - config.swa_epochs, config.warmup_epochs
    if cosine_epochs > 0 and warmup > cosine_epochs / 2:
        warmup = cosine_epochs / 2
        log(f"warm-up {warmup:g} epoch(s), not {config.warmup_epochs:g}: at most half of the {cosine_epochs} "
            f"epoch(s) of the schedule")
    return dataclasses.replace(config, batch_size=batch_size, warmup_epochs=warmup)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """SGD's parameter groups: weight decay on conv and linear weights, none on BatchNorm and biases."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim > 1 else no_decay).append(param)  # conv/linear weights vs BN and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], device)
    return loss_sum / max(count, 1), correct / max(count, 1)


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
        log(f"starting from {path}: all {len(weights)} tensors, classifier included")
    else:
        log(f"starting from {path}: all but the classifier ({theirs}); a new one for {len(classes)} classes")


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
        log("\nCtrl-C: stopping after this step (press again to stop at once)")

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


def check_options(config: TrainConfig, device: torch.device) -> None:
    """What argparse cannot check, refused before any data is decoded."""
    if config.epochs is None or config.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size is not None and config.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.amp not in ("auto", "bf16", "off"):
        raise UserError(f"--amp must be auto, bf16 or off, got {config.amp!r}")
    if not 0 <= config.swa_epochs <= config.epochs or config.swa_lr <= 0:
        raise UserError(f"--swa-epochs must be in [0, --epochs] and --swa-lr > 0, got {config.swa_epochs} and "
                        f"{config.swa_lr}")
    if config.compile:
        _check_compiler(device)


def scan_folders(config: TrainConfig) -> tuple[ImageFolder, ImageFolder, list[int], list[int]]:
    """(training folder, validation folder, training indices, validation indices): --val-data, or a seeded
    per-class share of the training folder held out."""
    folder = ImageFolder.scan(config.data)
    if not config.val_data:
        train_idx, val_idx = split_per_class([label for _, label in folder.samples], config.val_split, config.seed)
        return folder, folder, train_idx, val_idx
    val_folder = ImageFolder.scan(config.val_data)
    if val_folder.classes != folder.classes:
        raise UserError(f"validation classes {val_folder.classes} differ from training classes {folder.classes}")
    return folder, val_folder, list(range(len(folder.samples))), list(range(len(val_folder.samples)))


def normalisation(train_split: InMemorySplit, resumed: dict | None, init_state: dict | None,
                  layout: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the input: a resumed run's own; a fine-tuned net's (what its features expect); else the
    training images'."""
    if resumed is not None:
        return tuple(resumed["preprocess"]["mean"]), tuple(resumed["preprocess"]["std"])
    if init_state is not None:
        # a bare state_dict does not say how it normalised: the layout's usual statistics (ImageNet statistics
        # for torchvision's ImageNet nets)
        trained_with = spec_from_checkpoint(init_state) if "preprocess" in init_state else default_spec(layout)
        return trained_with.mean, trained_with.std
    pixels = train_split.images.reshape(-1, 3).float() / 255.0
    return tuple(pixels.mean(0).tolist()), tuple(pixels.std(0).tolist())


def epoch_batches(split: InMemorySplit, epoch: int, config: TrainConfig, fill: tuple[int, int, int], rank: int,
                  world: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's (uint8 images, labels) of every full batch of one epoch, shuffled and augmented from a
    generator seeded by (seed, epoch): a resumed run draws what an uninterrupted one would. Every process draws
    the whole batch's augmentation (the same generator) and keeps its share."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(split), generator=generator)
    for step in range(len(split) // config.batch_size):  # the ragged last batch is dropped
        batch_idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        images = augment_batch(split.images[batch_idx], config.crop_padding, generator, config.cutout, fill)
        yield images[rank::world], split.labels[batch_idx][rank::world].to(device)


def train(config: TrainConfig, resume: bool = False, force: bool = False, show_progress: bool = True) -> dict:
    """Train per ``config``; returns the final row of metrics. Raises UserError for bad input.

    ``resume``: continue ``config.out`` from its last.pt, with the run's own config.json; of ``config`` only
    ``epochs`` (None: the run's own; more extends it) and ``compile`` count."""
    rank, world, device = setup_distributed(config.device)
    try:
        return _train(config, resume, force, show_progress, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, resume: bool, force: bool, show_progress: bool, rank: int, world: int,
           device: torch.device) -> dict:
    threads = config.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    out = prepare_run_folder(config, resume, force)
    resumed = init_state = None
    if resume:  # the weights come from last.pt; --init only mattered for the first epoch
        resumed = load_checkpoint(out / "last.pt")
        config = resumed_config(out, config)
        if is_finished(out, config, resumed):  # said before any decoding
            return resumed["history"][-1] if resumed["history"] else {}
    else:
        config, init_state = resolve_init(config)  # checked before minutes of decoding
    check_options(config, device)

    layout = model_spec(config.arch).layout
    side = config.input_size or model_spec(config.arch).default_input_size
    folder, val_folder, train_idx, val_idx = scan_folders(config)
    distiller = load_teachers(config, folder.classes, side, device, val_folder, val_idx)  # before decoding too
    torch.manual_seed(config.seed)
    model = create_model(config.arch, num_classes=len(folder.classes),
                         **({"shortcut": config.shortcut} if layout == "cifar" else {}))
    if init_state is not None:  # like the teachers, checked before decoding
        load_init_weights(model, init_state, config.init, folder.classes)
        check_held_out(Path(config.init), "--init checkpoint", val_folder, val_idx)

    # Geometry first (mean/std are not used by fit_frame); normalisation constants come from the data.
    geometry = PreprocessSpec(input_size=(side, side), crop_ratio=1.0)
    train_split, skipped_train = load_split(folder, train_idx, geometry, "decoding train", show_progress and is_main())
    val_split, skipped_val = load_split(val_folder, val_idx, geometry, "decoding val", show_progress and is_main())
    if len(train_split) == 0 or len(val_split) == 0:
        raise UserError(f"no readable images left (train {len(train_split)}, validation {len(val_split)})")
    mean, std = normalisation(train_split, resumed, init_state, layout)
    spec = PreprocessSpec(input_size=(side, side), mean=mean, std=std, color_order="RGB", crop_ratio=1.0)
    cutout_fill = tuple(round(255 * m) for m in mean)  # the mean colour: 0 after normalisation
    if distiller is not None:
        distiller.use_student_spec(spec)
        if is_main():
            distiller.report_accuracy(val_split, device)
    log(f"data: {len(train_split)} train / {len(val_split)} validation images, {len(folder.classes)} classes, "
        f"skipped {skipped_train + skipped_val} unreadable; {world} process(es) x {threads} thread(s) on {device}")
    config = fit_to_data(config, len(train_split))  # a resumed run's were fitted when it started

    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=True)
    average = WeightAverage(model) if config.swa_epochs else None
    rows: list[dict] = []
    start_epoch = 0
    if resumed is not None:
        rows, start_epoch = restore_run(resumed, model, optimizer)
        if average is not None:
            average.restore(resumed)
        log(f"resuming {out} after epoch {start_epoch} of {config.epochs}")
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    if config.compile:  # fuses BN/ReLU/add around the convolutions; checkpoints still come from the plain `model`
        log("torch.compile: the first steps compile the network (a minute or two), then run faster")
        net = torch.compile(net)
        if distiller is not None:
            distiller.compile()
    use_bf16 = autocast_bf16(config.amp, device)
    log(f"precision: {precision_note(config.amp, bf16_kernels(device), device)}")
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    steps_per_epoch = len(train_split) // config.batch_size
    schedule = Schedule.of(config, steps_per_epoch)
    if config.swa_epochs:
        log(f"weight averaging (SWA): the last {config.swa_epochs} epochs at lr {config.swa_lr:g}, their weights "
            "averaged")
    if is_main():
        write_run_files(out, config, folder.classes, val_folder, val_split.files)

    row: dict = rows[-1] if rows else {}
    # one process: Ctrl-C stops between steps; under torchrun the ranks would see it at different steps and
    # hang in the all-reduce, so there it interrupts at once and torchrun ends the group
    with ctrl_c_between_steps(enabled=world == 1) as ctrl_c_pressed:
        try:
            for epoch in range(start_epoch, config.epochs):
                net.train()
                loss_sum, correct, seen, started = 0.0, 0.0, 0.0, time.perf_counter()
                bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           disable=not (show_progress and is_main()), file=sys.stderr, dynamic_ncols=True)
                batches = epoch_batches(train_split, epoch, config, cutout_fill, rank, world, device)
                for step, (images, labels) in zip(bar, batches):
                    for group in optimizer.param_groups:
                        group["lr"] = schedule(epoch * steps_per_epoch + step)
                    x = to_input(images, spec, device)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        logits = net(x)
                        loss = criterion(logits.float(), labels)
                        if distiller is not None:
                            loss = distiller.loss(loss, logits, images, x, device)
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
                loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], device)
                seconds = time.perf_counter() - started
                shipped = model  # what last.pt's "model" holds and validation measures
                if average is not None and epoch >= config.epochs - config.swa_epochs:
                    shipped = average_epoch(average, model, epoch, train_split, spec, config, cutout_fill, use_bf16,
                                            rank, world, device)
                val_loss, val_acc = evaluate(shipped, val_split, spec, device, rank, world)
                row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
                       "train_acc": correct / seen, "val_loss": val_loss, "val_acc": val_acc,
                       "epoch_seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 1)}
                rows.append(row)
                averaged = f" (average of {average.count} epoch{'s' * (average.count > 1)})" if shipped is not model else ""
                log(f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}% | "
                    f"val{averaged} loss {val_loss:.4f} acc {100 * val_acc:.2f}% | {seconds:.0f}s, "
                    f"{row['images_per_second']:.0f} img/s")
                if is_main():
                    save_checkpoint(out / "last.pt", shipped, optimizer, epoch + 1, config, folder.classes, spec, rows,
                                    trained=model if shipped is not model else None,
                                    averaged_epochs=average.count if average is not None else 0)
                    write_metrics(rows, out)
                if dist.is_initialized():
                    dist.barrier()
                if ctrl_c_pressed() and epoch + 1 < config.epochs:  # pressed in validation or while writing
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            log(f"\ninterrupted: {out}/last.pt holds epoch {rows[-1]['epoch'] if rows else 0}; continue with --resume")
            raise
    return row


def average_epoch(average: WeightAverage, model: nn.Module, epoch: int, split: InMemorySplit, spec: PreprocessSpec,
                  config: TrainConfig, fill: tuple[int, int, int], use_bf16: bool, rank: int, world: int,
                  device: torch.device) -> nn.Module:
    """Add the epoch's weights to the average and measure its BatchNorm statistics on training batches
    augmented as training augments them (from their own seeded generator); returns the average."""
    average.add(model)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 50_000)
    average.measure_batchnorm(split, lambda images: augment_batch(images, config.crop_padding, generator,
                                                                  config.cutout, fill),
                              spec, device, use_bf16, config.batch_size, generator, rank, world)
    return average.model
