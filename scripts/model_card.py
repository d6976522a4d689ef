"""Print the model-card section of models/README.md for one shipped model, from its run and its files.

    python scripts/model_card.py cifar10-resnet20 runs/r20

Everything printed comes from the run folder (config.json, metrics.csv, split.json written by
`resnet-edge train`), the verify report (models/NAME.verify.json written by scripts/build-default-models.sh)
and the model files themselves (size, sha256): no number is typed in by hand.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from resnet_edge.providers import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]




def _int8_label(path: Path) -> str:
    """The int8 row's description, from the quantization settings the file records in its metadata."""
    import onnx  # the quantize extra; only the int8 row needs it

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    settings = json.loads(props.get("quantization", "{}"))
    bits = f", {settings['weight_bits']}-bit weights" if "weight_bits" in settings else ""
    return f"ONNX int8 (QDQ, U8S8, per-channel{bits})"


def _file_line(path: Path) -> str:
    data = path.read_bytes()
    return f"`{path.name}`: {len(data):,} bytes, sha256 `{hashlib.sha256(data).hexdigest()}`"


def trained_in_bf16(config: dict) -> bool:
    """Whether the run trained under bf16 autocast: ``--amp bf16``, or ``auto`` where bf16 is the faster choice.
    A card is printed on the machine that trained the run, so ``auto`` is decided as training did."""
    import torch  # the train extra, which made the run

    from resnet_edge.training.train import autocast_bf16

    return autocast_bf16(config.get("amp", "auto"), torch.device(config.get("device", "cpu")))


def _precision(config: dict) -> str:
    if trained_in_bf16(config):
        return "bf16 autocast"
    return "fp32 (`--amp off`)" if config.get("amp") == "off" else "fp32 (`--amp auto` on a CPU without fast bf16)"


def _run_path(checkpoint: str) -> str:
    return f"runs/{Path(checkpoint).parent.name}/{Path(checkpoint).name}"


def _teachers(config: dict) -> list[str]:
    """The --teacher checkpoints."""
    return list(config.get("teacher") or [])


def _train_command(config: dict) -> str:
    from resnet_edge.training.config import DEFAULT_BATCH_SIZE, TrainConfig

    given = ("data", "out", "arch", "val_split", "epochs", "seed")  # always spelled out, first
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name not in given}
    # config.json records what the run trained with: the shortcut (and, unless a small folder shrank it, the
    # batch) that the defaults resolve to
    defaults.update(shortcut="A", batch_size=DEFAULT_BATCH_SIZE)
    parts = ["resnet-edge train", "cifar10/train", "--out", f"runs/{Path(config['out']).name}",
             "--arch", config["arch"], "--val-split", f"{config['val_split']:g}", "--epochs", str(config["epochs"]),
             "--seed", str(config["seed"])]
    for key, default in defaults.items():
        value = config.get(key, default)
        if key == "teacher":  # repeated, one flag per teacher
            parts += [part for teacher in _teachers(config) for part in ("--teacher", _run_path(teacher))]
            continue
        if key == "init" and value:  # the checkpoint's run folder, named as the other runs are
            value = _run_path(value)
        if value != default:
            flag = f"--{key.replace('_', '-')}"
            parts += [flag] if value is True else [flag, str(value)]  # a switch takes no value
    return " ".join(parts)


def _runs_before(config: dict) -> list[dict]:
    """Configs of the runs this one needs first, in training order: the ``--init`` and ``--teacher`` runs
    (and theirs), each once, where their run folder is still there to read."""
    needed: list[dict] = []
    for checkpoint in ([config["init"]] if config.get("init") else []) + _teachers(config):
        run_config = Path(checkpoint).parent / "config.json"
        if run_config.is_file():
            earlier = json.loads(run_config.read_text())
            needed += [c for c in _runs_before(earlier) + [earlier] if c not in needed]
    return needed


def _schedule(config: dict) -> str:
    swa, epochs = config.get("swa_epochs", 0), config["epochs"]
    averaged = f"the weights of its last {swa} averaged (SWA, BN statistics measured again)"
    if swa == epochs:
        return f"a constant lr {config['swa_lr']:g}, " + averaged.replace("its last", "all")
    warmup = f"after {config['warmup_epochs']:g} warm-up epochs " if config["warmup_epochs"] else ""
    if swa:
        return (f"peak lr {config['lr']} {warmup}then cosine to {config['swa_lr']:g}, held for the last {swa} epochs, "
                + averaged.replace("its last", "those"))
    return f"peak lr {config['lr']} {warmup}then cosine to 0"


def card(name: str, run: Path, models_dir: Path = ROOT / "models") -> str:
    config = json.loads((run / "config.json").read_text())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    split = json.loads((run / "split.json").read_text())
    held_out = Counter(f.split("/", 1)[0] for f in split["val_files"])
    verify = json.loads((models_dir / f"{name}.verify.json").read_text())
    last = rows[-1]
    best = max(rows, key=lambda r: float(r["val_acc"]))
    train_seconds = sum(float(r["epoch_seconds"]) for r in rows)
    images_trained = sum(float(r["images_per_second"]) * float(r["epoch_seconds"]) for r in rows)
    init_run = Path(config["init"]).parent if config.get("init") else None
    before, same_split = "", False
    if init_run is not None and (init_run / "metrics.csv").is_file():  # fine-tuned: the starting run's time counts
        init_rows = list(csv.DictReader((init_run / "metrics.csv").open()))
        same_split = json.loads((init_run / "split.json").read_text())["val_files"] == split["val_files"]
        before = (f", after the {len(init_rows)} epochs ({sum(float(r['epoch_seconds']) for r in init_rows) / 60:.0f} "
                  f"min) of `{init_run.name}` it started from")
    models = {m["precision"] if m["kind"] == "onnx" else "pytorch": m for m in verify["models"]}
    fp32, int8 = models_dir / f"{name}.onnx", models_dir / f"{name}.int8.onnx"
    lines = [
        f"## {name}",
        "",
        f"- Network: `{config['arch']}` (He et al. 2016, CIFAR layout, shortcut option {config['shortcut']}), "
        f"{len(split['classes'])} classes: {', '.join(split['classes'])}.",
        f"- Data: CIFAR-10 training split as JPEG files (`../shared/datasets/cifar10/train.tar.gz`). "
        f"{sum(held_out.values()):,} images held out for validation ({min(held_out.values())} per class, "
        f"seeded, listed in the run's `split.json`), never trained on; the rest trained on.",
        f"- Recipe: {config['epochs']} epochs, batch {config['batch_size']}, SGD Nesterov momentum {config['momentum']}, "
        + _schedule(config) + ", weight decay "
        f"{config['weight_decay']:g} (conv/linear weights), label smoothing {config['label_smoothing']}, random crop "
        f"(pad {config['crop_padding']}) + horizontal flip"
        + (f" + cutout {config['cutout']}x{config['cutout']} (mean colour)" if config.get("cutout") else "")
        + f" per image, {_precision(config)}, channels_last, seed {config['seed']}"
        + (f"; fine-tuned from `{init_run.name}`'s last.pt"
           + (" (same held-out split)" if same_split else "") if init_run is not None else "")
        + (f"; knowledge distillation from " + " and ".join(f"`{Path(t).parent.name}`" for t in _teachers(config))
           + (" (the mean of their softened outputs)" if len(_teachers(config)) > 1 else "") + " (loss "
           f"{1 - config['distill_weight']:g} x labels + {config['distill_weight']:g} x teacher at "
           f"T={config['distill_temperature']:g})" if config.get("teacher") else "") + ".",
        "- Reproduce: " + "".join(f"`{_train_command(c)}`, " for c in _runs_before(config))
        + f"`{_train_command(config)}`, then "
        f"`bash scripts/build-default-models.sh runs/{Path(config['out']).name} cifar10/train {name}` "
        "(`resnet-edge export --probes`, `resnet-edge quantize`, `resnet-edge verify`).",
        f"- Training: {len(rows)} epochs, {train_seconds / 60:.0f} min of training steps "
        f"(≈{images_trained / train_seconds:.0f} images/s on average) on {cpu_name()}, {os.cpu_count()} cores, "
        f"PyTorch CPU{before}.",
        f"- validation top-1 (PyTorch, last epoch): **{100 * float(last['val_acc']):.2f}%** "
        f"(best epoch {best['epoch']}: {100 * float(best['val_acc']):.2f}%; the last epoch is what ships).",
        "",
        f"Verified with `resnet-edge verify` on the {verify['data']['images']:,} held-out images "
        f"(`models/{name}.verify.json`):",
        "",
        "| model | precision | validation top-1 | file |",
        "|---|---|---|---|",
    ]
    trained = "checkpoint (bf16-trained, fp32 eval)" if trained_in_bf16(config) else "checkpoint (fp32-trained)"
    for key, label, path in (("pytorch", trained, None), ("fp32", "ONNX fp32", fp32),
                             ("int8", _int8_label(int8) if int8.exists() else "", int8)):
        if key in models:
            size = f"{path.stat().st_size / 1e6:.2f} MB" if path else "-"
            lines.append(f"| {label} | {models[key]['precision']} | {100 * models[key]['top1']:.2f}% | {size} |")
    lines.append("")
    for pair in verify["pairs"]:
        diff = "n/a" if pair["max_logit_diff"] is None else f"{pair['max_logit_diff']:.3g}"
        lines.append(f"- {pair['a']} vs {pair['b']}: top-1 agreement {100 * pair['agreement']:.2f}%, "
                     f"max |logit diff| {diff}")
    if verify.get("max_drop"):
        drops = ", ".join(f"{d['name']} {d['points']:+.2f} points" for d in verify["max_drop"]["drops"])
        lines.append(f"- accuracy drop against {verify['max_drop']['reference']}: {drops} "
                     f"(allowed {verify['max_drop']['limit_points']:g})")
    if int8.exists():
        lines.append(f"- int8 file size: {100 * int8.stat().st_size / fp32.stat().st_size:.1f}% of fp32")
    lines += ["", "Files:", ""]
    lines += [f"- {_file_line(p)}" for p in (fp32, int8) if p.exists()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model name, e.g. cifar10-resnet20 (models/NAME.onnx)")
    parser.add_argument("run", type=Path, help="the training run folder")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="folder of the model files (default models/)")
    args = parser.parse_args()
    print(card(args.name, args.run, args.models))


if __name__ == "__main__":
    main()
