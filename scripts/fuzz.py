"""Coverage-guided fuzzing (atheris, libFuzzer) of the readers that see untrusted bytes first.

    python scripts/fuzz.py                       # every target, 600 s each
    python scripts/fuzz.py --seconds 60 --target onnx
    python scripts/fuzz.py --make-corpus         # (re)write the seed corpus in tests/fuzz_corpus/

Targets (each promises: our own one-line error, or a result; anything else is a crash):
    onnx       resnet_edge.onnxfile: the protobuf walker and validator (inspect_onnx_bytes, control flow check,
               strip_graph_outputs) on arbitrary bytes: ModelFileError or a summary
    metadata   resnet_edge.metadata: ModelContract.from_props on arbitrary metadata_props: MetadataError or a contract
    image      resnet_edge.images: format sniffing and every header reader (TIFF's directory walk included), the
               pixel cap, and decode_image_bytes: ImageError or a checked size / an image

    checkpoint resnet_edge.training.checkpoint: load_checkpoint's pre-checks (zip directory sizes, legacy
               storages, tensor storage/strides) and the weights_only load on arbitrary file bytes: UserError or a
               state dict (needs torch)

Each target runs in its own process (a native crash ends only that one) on a copy of its seed corpus, so the
repository is not written to; crashes are saved in --artifacts (default: the current folder) as crash-<sha1>.
Needs `pip install -e '.[fuzz]'` (atheris; wheels for CPython 3.8-3.11 on Linux and macOS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
TARGETS = ("onnx", "metadata", "image", "checkpoint")


# --- the targets (run inside the child) --------------------------------------------------------------

def target_onnx(data: bytes) -> None:
    from resnet_edge.onnxfile import ModelFileError, check_control_flow, inspect_onnx_bytes, strip_graph_outputs

    try:
        summary = inspect_onnx_bytes(data, "fuzz.onnx")
    except ModelFileError:
        return
    try:
        check_control_flow(summary)
    except ModelFileError:
        pass
    try:
        strip_graph_outputs(data, {o.name for o in summary.outputs[1:]}, "fuzz.onnx")
    except ModelFileError:  # its own one-line refusal of a file the validator let through
        pass


def target_metadata(data: bytes) -> None:
    """``data`` is key NUL value NUL key NUL value...: the seed is our own contract, mutated from there."""
    from resnet_edge.metadata import MetadataError, ModelContract

    parts = data.decode("utf-8", errors="replace").split("\x00")
    props = dict(zip(parts[0::2], parts[1::2]))
    try:
        contract = ModelContract.from_props(props, source="fuzz")
    except MetadataError:
        return
    ModelContract.from_props(contract.to_props(), source="fuzz")  # what we accept, we write back and read again


def target_image(data: bytes) -> None:
    from resnet_edge.images import (HEAD_BYTES, ImageError, check_pixels, decode_image_bytes, header_size,
                                    sniff_container, sniff_format)

    fmt = sniff_format(data[:32]) or sniff_format(data[:HEAD_BYTES])
    sniff_container(data[:HEAD_BYTES])
    if fmt is not None:
        size = header_size(fmt, data[:HEAD_BYTES], lambda offset, count: data[offset : offset + min(count, 1 << 20)])
        try:
            check_pixels(fmt, size, "fuzz")
        except ImageError:
            pass
    try:
        image = decode_image_bytes(data, "fuzz")
    except ImageError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] * image.shape[1] <= 50_000_000


_CHECKPOINT_FILE: list = []  # one scratch file per fuzzing process: load_checkpoint reads a path


def target_checkpoint(data: bytes) -> None:
    import tempfile

    from resnet_edge.errors import UserError
    from resnet_edge.training.checkpoint import load_checkpoint

    if not _CHECKPOINT_FILE:
        _CHECKPOINT_FILE.append(Path(tempfile.mkdtemp(prefix="fuzz-checkpoint-")) / "fuzz.pt")
    path = _CHECKPOINT_FILE[0]
    path.write_bytes(data)
    try:
        state = load_checkpoint(path)
    except UserError:
        return
    assert isinstance(state, dict) and "model" in state


TARGET_FUNCTIONS = {"onnx": target_onnx, "metadata": target_metadata, "image": target_image,
                    "checkpoint": target_checkpoint}


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():  # coverage of our own modules, not of numpy or OpenCV
        import resnet_edge.images  # noqa: F401
        import resnet_edge.metadata  # noqa: F401
        import resnet_edge.onnxfile  # noqa: F401
        if target == "checkpoint":
            import resnet_edge.training.checkpoint  # noqa: F401
    function = TARGET_FUNCTIONS[target]
    atheris.Setup([sys.argv[0], *libfuzzer_args], function)
    atheris.Fuzz()


# --- the seed corpus -------------------------------------------------------------------------------

def make_corpus() -> None:
    """Small seeds per target: a valid file of each kind and a few near misses (written once, committed)."""
    import struct
    import zlib

    import cv2
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from test_bad_inputs import build_model, contract_props  # the suite's own tiny models

    seeds: dict[str, dict[str, bytes]] = {"onnx": {}, "metadata": {}, "image": {}}
    seeds["onnx"]["tiny.onnx"] = build_model()
    seeds["onnx"]["external.onnx"] = build_model(external="../x")
    seeds["onnx"]["function.onnx"] = build_model(external_in="function")
    seeds["onnx"]["truncated.onnx"] = build_model()[:-40]
    props = contract_props()
    seeds["metadata"]["contract.bin"] = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in props.items())
    frame = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm"):
        ok, buf = cv2.imencode(ext, frame)
        if ok:
            # the JPEG seed as .bin: no .jpg files in the repository outside docs/ (the target sniffs the bytes)
            seeds["image"]["small-jpeg.bin" if ext == ".jpg" else f"small{ext}"] = buf.tobytes()
    seeds["image"]["header.gif"] = b"GIF89a" + struct.pack("<HH", 16, 12) + b"\x00" * 16
    seeds["image"]["header.qoi"] = b"qoif" + struct.pack(">II", 16, 12) + b"\x03\x00" + b"\x00" * 8
    seeds["image"]["bomb.png"] = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
                                  + struct.pack(">I", zlib.crc32(b"IHDR")) + b"\x00" * 12 + b"IEND")
    for target, files in seeds.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{folder.relative_to(ROOT)}: {len(files)} seeds")


# --- the driver ------------------------------------------------------------------------------------

def run_target(target: str, seconds: int, artifacts: Path) -> dict:
    """Fuzz one target for ``seconds`` in a child; {"target", "seconds", "execs", "crashes", "result"}."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as work:
        corpus = Path(work) / "corpus"
        shutil.copytree(CORPUS / target, corpus)
        args = [str(corpus), f"-max_total_time={seconds}", f"-artifact_prefix={artifacts}/{target}-",
                "-max_len=65536", "-rss_limit_mb=2048", "-timeout=120", "-print_final_stats=1"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        started = time.monotonic()
        process = subprocess.run([sys.executable, __file__, "--child", target, "--", *args], env=env,
                                 capture_output=True, text=True, errors="replace")
        elapsed = time.monotonic() - started
        log = process.stdout + process.stderr
        (artifacts / f"{target}.log").write_text(log[-200_000:])
        execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
        crashes = sorted(p.name for p in artifacts.glob(f"{target}-crash-*")) + sorted(
            p.name for p in artifacts.glob(f"{target}-timeout-*")) + sorted(p.name for p in artifacts.glob(f"{target}-oom-*"))
        return {"target": target, "seconds": round(elapsed), "execs": int(execs[-1]) if execs else None,
                "corpus": len(list(corpus.iterdir())), "crashes": crashes,
                "result": "ok" if process.returncode == 0 and not crashes else f"exit {process.returncode}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    parser.add_argument("--artifacts", default="fuzz-artifacts", help="folder for crash inputs and logs")
    parser.add_argument("--make-corpus", action="store_true", help="write the seed corpus and exit")
    parser.add_argument("--json", help="also write the results as JSON")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        child(args.child, [a for a in rest if a != "--"])
        return 0
    if args.make_corpus:
        make_corpus()
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("scripts/fuzz.py needs atheris: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    results = []
    print(f"{'target':<10}{'seconds':>8}{'execs':>12}{'corpus':>8}  result")
    for target in TARGETS if args.target == "all" else (args.target,):
        row = run_target(target, args.seconds, Path(args.artifacts).absolute())
        results.append(row)
        print(f"{row['target']:<10}{row['seconds']:>8}{row['execs'] or '?':>12}{row['corpus']:>8}  {row['result']}"
              + (f" ({', '.join(row['crashes'])})" if row["crashes"] else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(row["result"] == "ok" for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
