"""`resnet-edge info`: a model's inputs, outputs, metadata, opsets, size and probes (no torch)."""

from __future__ import annotations

import argparse



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model's inputs, outputs, metadata, opset, size and probes (no torch)")
    p.add_argument("model", nargs="?", help="ONNX model file or shipped model name (default: the shipped default)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from ..metadata import MetadataError, ModelContract
    from ..modelzoo import resolve_model
    from ..onnxfile import read_model_file
    from ..safety import printable as p

    path = resolve_model(args.model)
    data, summary = read_model_file(path)
    try:
        contract = ModelContract.from_props(summary.metadata, source=str(path))
        problem = None
    except MetadataError as error:
        contract, problem = None, str(error)
    probe_names = {n for names in (contract.probes.values() if contract else []) for n in names.values()}
    info = {
        "path": str(path), "size_bytes": summary.size_bytes, "sha256": hashlib.sha256(data).hexdigest(),
        "ir_version": summary.ir_version, "opsets": summary.opsets, "producer": summary.producer,
        "nodes": summary.node_count,
        "inputs": [{"name": t.name, "type": t.elem_type, "shape": t.shape} for t in summary.inputs],
        "outputs": [{"name": t.name, "type": t.elem_type, "shape": t.shape} for t in summary.outputs if t.name not in probe_names],
        "probes": len(probe_names) // 2,
        "metadata": {k: _maybe_json(v) for k, v in summary.metadata.items()},
        "contract_problem": problem,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    # every string below comes from the file: printed through p() (safety.printable), never raw
    print(f"{p(path)}  {summary.size_bytes / 1e6:.2f} MB  sha256 {info['sha256'][:16]}...")
    print(f"  producer {p(summary.producer or '?')}, IR {summary.ir_version}, opsets "
          + ", ".join(f"{p(d or 'ai.onnx')} {v}" for d, v in summary.opsets.items()) + f", {summary.node_count} nodes")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            print(f"  {kind[:-1]:6} {p(t['name'])}: {p(t['type'])} {p(t['shape'])}")
    if contract:
        spec = contract.preprocess
        labels = ", ".join(p(label, 64) for label in contract.labels[:10]) + (f", ... ({len(contract.labels)} in all)" if len(contract.labels) > 10 else "")
        print(f"  arch {p(contract.arch)}, precision {p(contract.precision)}, {len(contract.blocks)} residual blocks, "
              f"probes {'x_l and F(x_l) for every block' if probe_names else 'none'}")
        print(f"  input {spec.input_size[0]}x{spec.input_size[1]} {spec.color_order}, {spec.resize_policy} "
              f"(crop ratio {spec.crop_ratio}{f', resize {spec.resize_size}' if spec.resize_size else ''}), "
              f"mean {list(spec.mean)}, std {list(spec.std)}")
        print(f"  labels: {labels}")
    else:
        print(f"  no resnet-edge contract: {p(problem)}")
    for key, value in info["metadata"].items():
        if key not in ("labels", "blocks", "probes", "mean", "std", "input_size", "color_order", "resize", "arch", "precision"):
            print(f"  metadata {p(key, 100)}: {p(json.dumps(value)[:200])}")
    return 0


def _maybe_json(text: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
