"""`resnet-edge export`: a PyTorch ResNet (our checkpoint, a torchvision state_dict, or fresh weights)
-> an ONNX file that carries its own contract, checked against PyTorch before it is written.

Steps: build the net, load weights (weights_only), trace it to ONNX (opset >= 17, dynamic batch, BN
folded into the convolutions), attach the metadata, run onnx.checker (full) and strict shape inference,
then compare ONNX Runtime with PyTorch on random tensors and on image-like frames sent through the
runtime's own preprocessing: max |logit diff| <= 1e-4 x max(1, max |logit|) and 100% top-1 agreement, or
nothing is written.

An ImageNet-layout net without preprocessing of its own (a torchvision file, fresh weights) gets torchvision's
V1 evaluation transform: Resize(256), CenterCrop(224), ImageNet mean/std (``--resize-size 232`` for the V2
weights of resnet50/101/152). With ImageNet's 1000 labels the WordNet ids go along as ``label_ids``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomicio import check_writable, write_bytes_atomic
from ..errors import CheckFailed, UserError
from ..labelsets import load_labels
from ..metadata import ModelContract, block_output_name, probe_output_names
from ..preprocess import PreprocessSpec, default_spec, preprocess
from ..synthetic import synthetic_frames
from .checkpoint import check_architecture, load_checkpoint, load_weights, spec_from_checkpoint
from .nets import ProbedModel, ResNetBase, create_model, model_spec

MIN_OPSET = 17
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportOptions:
    arch: str | None  # registry name; None: the one --checkpoint records
    output: str  # .onnx path
    checkpoint: str | None = None  # ours or a torchvision-style state_dict; None = fresh weights
    labels: str | None = None  # imagenet | cifar10 | file | comma list; default from checkpoint/layout
    probes: bool = False  # add x_l and F(x_l) of every block as outputs
    opset: int = 17  # ONNX opset (>= 17)
    input_size: int | None = None  # override the input side
    mean: tuple[float, float, float] | None = None  # override normalisation
    std: tuple[float, float, float] | None = None
    color_order: str | None = None  # override, "RGB" or "BGR"
    crop_ratio: float | None = None  # override: crop side / resized shorter side
    resize_size: int | None = None  # override: shorter side before the centre crop (232 for V2 resnet50/101/152)
    extra_metadata: dict | None = None  # more metadata keys (e.g. a weights preset's accuracy, URL, hash); ours win
    force: bool = False  # overwrite an existing output
    parity_samples: int = 8  # random tensors and image-like frames each, for the parity check
    seed: int = 0  # fresh weights and parity inputs


@dataclass
class ParityReport:
    max_abs_diff: float  # max |logit diff| over all parity inputs
    limit: float  # what max_abs_diff must not exceed
    agreement: float  # share of inputs whose top-1 class matches
    samples: int
    probe_max_abs_diff: float | None  # max diff over probe outputs, when exported with probes

    def line(self) -> str:
        probes = f", probes max |diff| {self.probe_max_abs_diff:.2e}" if self.probe_max_abs_diff is not None else ""
        return (f"parity vs PyTorch: max |logit diff| {self.max_abs_diff:.2e} (limit {self.limit:.1e}), "
                f"top-1 agreement {100 * self.agreement:.1f}% over {self.samples} inputs "
                f"({self.samples // 2} random, {self.samples // 2} image-like){probes}")


def build_for_export(options: ExportOptions, log=print) -> tuple[ResNetBase, list[str], PreprocessSpec]:
    """The network (its ``arch`` attribute names it) with its weights, its labels and its preprocessing."""
    state: dict = {}
    if options.checkpoint:
        state = load_checkpoint(options.checkpoint)
        if state.get("arch") and options.arch not in (None, state["arch"]):
            raise UserError(f"{options.checkpoint} holds a {state['arch']}, not a {options.arch} (leave out --arch, "
                            f"or use --arch {state['arch']})")
    arch = options.arch or state.get("arch")
    if arch is None:
        raise UserError("--arch is needed: " + (f"{options.checkpoint} is a bare state_dict, which does not record "
                                                "its architecture" if options.checkpoint else
                                                "without --checkpoint there is no architecture to read"))
    spec_entry = model_spec(arch)
    weights = state.get("model", {})
    if options.checkpoint:  # shapes against the architecture before any network is built (meta device)
        check_architecture(arch, weights, options.checkpoint, state.get("model_kwargs"))
    labels = load_labels(options.labels) if options.labels else state.get("labels")
    if labels is None:
        fc = weights.get("fc.weight")
        classes = int(fc.shape[0]) if fc is not None else (10 if spec_entry.layout == "cifar" else 1000)
        builtin = {10: "cifar10", 1000: "imagenet"}.get(classes)
        labels = load_labels(builtin) if builtin else [f"class_{i}" for i in range(classes)]
    torch.manual_seed(options.seed)
    model = create_model(arch, num_classes=len(labels), **state.get("model_kwargs", {}))
    if options.checkpoint:
        load_weights(model, weights, options.checkpoint)
        log(f"loaded {arch} weights from {options.checkpoint}")
    else:
        log(f"note: no --checkpoint given: exporting freshly initialised {arch} weights "
            "(good for speed tests, not for predictions)")
    spec = default_spec(spec_entry.layout, options.input_size)
    if "preprocess" in state:
        spec = spec_from_checkpoint(state)
    input_size = (options.input_size, options.input_size) if options.input_size else spec.input_size
    resize_size = spec.resize_size
    if spec_entry.layout != "cifar" and "preprocess" not in state and not options.crop_ratio:
        resize_size = round(min(input_size) * 256 / 224)  # torchvision's V1 transform: Resize(256) for a 224 crop
    if options.crop_ratio:  # a ratio given: the resize size follows from it
        resize_size = None
    if options.resize_size:
        if options.resize_size < min(input_size):
            raise UserError(f"--resize-size {options.resize_size} is smaller than the input size {input_size}")
        resize_size = options.resize_size
    crop_ratio = options.crop_ratio or spec.crop_ratio
    if resize_size:
        crop_ratio = min(input_size) / resize_size
    spec = PreprocessSpec(
        input_size=input_size, mean=options.mean or spec.mean, std=options.std or spec.std,
        color_order=options.color_order or spec.color_order, resize_policy=spec.resize_policy,
        crop_ratio=crop_ratio, resize_size=resize_size)
    return model.eval(), labels, spec


def to_onnx_bytes(model: ResNetBase, spec: PreprocessSpec, probes: bool, opset: int) -> bytes:
    """Trace to ONNX with a dynamic batch axis; outputs "logits" then probe.<block>.x / .residual, then
    (with probes) probe.<last block>.out, the last block's output x_L."""
    if opset < MIN_OPSET:
        raise UserError(f"--opset must be >= {MIN_OPSET}, got {opset}")
    output_names = ["logits"]
    if probes:
        for block in model.block_names:
            names = probe_output_names(block)
            output_names += [names["x"], names["residual"]]
        output_names.append(block_output_name(model.block_names[-1]))
    # the exporter restores each module's train/eval flag afterwards, recursively from the top module:
    # the wrapper must be in eval mode too, or the net comes back in training mode
    module = (ProbedModel(model, block_output=True) if probes else model).eval()
    dummy = torch.zeros(1, 3, *spec.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module, (dummy,), buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=["input"], output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *output_names]},
            training=torch.onnx.TrainingMode.EVAL,
        )
    return buffer.getvalue()


def attach_metadata(onnx_bytes: bytes, contract: ModelContract, doc: str) -> bytes:
    """Add metadata_props, run the full checker and strict shape inference; return the final bytes."""
    import onnx

    proto = onnx.load_model_from_string(onnx_bytes)
    del proto.metadata_props[:]
    for key, value in contract.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "resnet-edge"
    from .. import __version__

    proto.producer_version = __version__
    proto.doc_string = doc
    proto.graph.doc_string = doc
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    return proto.SerializeToString()


def parity_inputs(spec: PreprocessSpec, samples: int, seed: int) -> np.ndarray:
    """``samples`` random tensors and ``samples`` image-like frames through the runtime preprocessing."""
    rng = np.random.default_rng(seed)
    random = rng.standard_normal((samples, 3, *spec.input_size)).astype(np.float32)
    frames = synthetic_frames(samples, seed=seed + 1, height=max(48, spec.input_size[0] * 2),
                              width=max(64, spec.input_size[1] * 2))
    return np.concatenate([random, preprocess(frames, spec)])


def check_parity(model: ResNetBase, onnx_bytes: bytes, spec: PreprocessSpec, probes: bool,
                 samples: int, seed: int, relative: bool = False) -> ParityReport:
    """Logits of ONNX Runtime (CPU, all graph optimisations on, as deployed) against PyTorch fp32."""
    import onnxruntime as ort

    inputs = parity_inputs(spec, samples, seed)
    model.eval()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    ort_outputs = session.run(None, {"input": inputs})
    with torch.no_grad():
        torch_outputs = ProbedModel(model, block_output=True).eval()(torch.from_numpy(inputs)) if probes else (model(torch.from_numpy(inputs)),)
    torch_logits = torch_outputs[0].numpy()
    max_diff = float(np.max(np.abs(ort_outputs[0] - torch_logits)))
    agreement = float(np.mean(ort_outputs[0].argmax(1) == torch_logits.argmax(1)))
    probe_diff = None
    if probes:
        probe_diff = max(float(np.max(np.abs(a - b.numpy()))) for a, b in zip(ort_outputs[1:], torch_outputs[1:]))
    # fp32 rounding grows with the logits: trained ImageNet nets have logits of 20-70 and differ by a few 1e-3
    # between PyTorch and ONNX Runtime (fresh deep nets, without trained BN statistics, up to ~1e7). The limit
    # is 1e-4 of the largest logit, with 1e-4 absolute as the floor for small logits. (``relative`` is kept
    # for callers; the rule is the same for trained and fresh weights.)
    limit = PARITY_TOLERANCE * max(1.0, float(np.max(np.abs(torch_logits))))
    return ParityReport(max_diff, limit, agreement, len(inputs), probe_diff)


def export(options: ExportOptions, log=print) -> tuple[Path, ParityReport]:
    """Export per ``options``; raises CheckFailed (nothing written) when parity fails."""
    output = check_writable(options.output, options.force)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, labels, spec = build_for_export(options, log)
    onnx_bytes = to_onnx_bytes(model, spec, options.probes, options.opset)
    blocks = model.block_names
    extra = {"source": {"checkpoint": Path(options.checkpoint).name if options.checkpoint else None,
                        "fresh_weights": options.checkpoint is None}}
    if labels == load_labels("imagenet"):  # WordNet ids tell apart the names ImageNet uses twice (crane, maillot)
        extra["label_ids"] = load_labels("imagenet_wnids")
    form = model_spec(model.arch).form  # a new key: "post-activation", "pre-activation" or "plain"
    extra["form"] = form
    if options.probes:  # the last block's output x_L, so every block has its x_{l+1}
        extra["block_output"] = {blocks[-1]: block_output_name(blocks[-1])}
    for key, value in (options.extra_metadata or {}).items():
        extra.setdefault(key, value)
    contract = ModelContract(
        labels=labels, preprocess=spec, arch=model.arch, blocks=blocks,
        probes={block: probe_output_names(block) for block in blocks} if options.probes else {},
        precision="fp32", extra=extra,
    )
    doc = (f"{model.arch} ({'residual, ' + form if form != 'plain' else 'plain'}) image classifier, "
           f"{len(labels)} classes, input {spec.input_size[0]}x{spec.input_size[1]} {spec.color_order}; "
           "exported by resnet-edge. Preprocessing and labels are in metadata_props.")
    onnx_bytes = attach_metadata(onnx_bytes, contract, doc)
    report = check_parity(model, onnx_bytes, spec, options.probes, options.parity_samples, options.seed,
                          relative=options.checkpoint is None)
    log(report.line())
    if not (report.max_abs_diff <= report.limit and report.agreement == 1.0):
        raise CheckFailed(f"export failed the parity check ({report.line()}); {output} not written")
    write_bytes_atomic(output, onnx_bytes, force=options.force)
    log(f"wrote {output} ({len(onnx_bytes) / 1e6:.2f} MB, opset {options.opset}, "
        f"{len(blocks)} residual blocks{', with probes' if options.probes else ''})")
    return output, report
