"""Start-up of the standalone app, and its size: what README "Standalone app (PyInstaller)" reports.

    python benchmarks/bundle_startup.py [--runs 5] [--bundle dist/resnet-edge-gui] [--no-zip]
    python benchmarks/bundle_startup.py --command "python -m gui"      # the same check from a source checkout

Runs `resnet-edge-gui --self-test 1` RUNS times (offscreen, so no display is needed) and prints, per run:
- first prediction: the time from process start to the first prediction on screen, as the self-test reports
  it ("self-test: first prediction after S s"; Linux reads the start from /proc);
- seen outside: when that line reached this script, counted from just before the process was started;
- total: until the process exited (the self-test also classifies the sample in fp32 and int8, then closes);
- cpu at first: the CPU seconds (all threads) the process had used by its first prediction, as it reports them;
- cpu: user + system seconds the whole run used (POSIX). CPU times are what a busy machine does not inflate.
The first run is a cold start (files not yet in the page cache); the median is over all runs.
Then the folder's size (every file's bytes, as `du -sb`) and its size as a zip (deflate, level 6).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = "resnet-edge-gui"
FIRST = re.compile(r"self-test: first prediction after ([\d.]+) s.*?(?:; ([\d.]+) s CPU)?$")


def run_once(command: list[str], timeout: float) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    start = time.perf_counter()
    process = subprocess.Popen([*command, "--self-test", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=env)
    reported = seen = first_cpu = float("nan")
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        match = FIRST.search(line)
        if match and seen != seen:
            seen = time.perf_counter() - start
            reported = float(match.group(1))
            first_cpu = float(match.group(2)) if match.group(2) else float("nan")
    cpu = float("nan")
    if hasattr(os, "wait4"):
        _pid, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code
        cpu = usage.ru_utime + usage.ru_stime
    else:
        code = process.wait(timeout)
    total = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"self-test failed (exit {code}):\n{''.join(lines)}")
    return {"first": reported, "first_cpu": first_cpu, "seen": seen, "total": total, "cpu": cpu}


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def zipped_size(folder: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / f"{folder.name}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() or path.is_symlink():
                    archive.write(path, path.relative_to(folder.parent))
        return target.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / APP, help="the built folder (dist/resnet-edge-gui)")
    parser.add_argument("--command", help="run this instead of the bundle's executable, e.g. 'python -m gui'")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-zip", action="store_true", help="skip the zipped size")
    args = parser.parse_args()

    if args.command:
        command, what = shlex.split(args.command), args.command
    else:
        exe = args.bundle / (APP + (".exe" if sys.platform == "win32" else ""))
        if not exe.is_file():
            raise SystemExit(f"{exe} not found: build it first with `pyinstaller pyinstaller.spec`")
        command, what = [str(exe)], str(exe)
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"start-up to first prediction: {what} --self-test 1, {args.runs} runs, {os.cpu_count()} CPUs{load}")
    print(f"{'run':>5}  {'first prediction':>16}  {'cpu at first':>12}  {'seen outside':>12}  {'total':>7}  {'cpu':>6}")
    results = []
    for index in range(args.runs):
        row = run_once(command, args.timeout)
        results.append(row)
        label = "cold" if index == 0 else str(index + 1)
        print(f"{label:>5}  {row['first']:>14.2f} s  {row['first_cpu']:>10.2f} s  {row['seen']:>10.2f} s  "
              f"{row['total']:>5.2f} s  {row['cpu']:>4.2f} s", flush=True)
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(f"{'median':>5}  {med['first']:>14.2f} s  {med['first_cpu']:>10.2f} s  {med['seen']:>10.2f} s  "
          f"{med['total']:>5.2f} s  {med['cpu']:>4.2f} s")

    if not args.command:
        size = folder_size(args.bundle)
        print(f"\nfolder {args.bundle}: {size / 1e6:.1f} MB ({size} bytes)")
        if not args.no_zip:
            packed = zipped_size(args.bundle)
            print(f"zipped (deflate, level 6): {packed / 1e6:.1f} MB ({packed} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
