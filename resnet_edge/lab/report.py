"""Running a lab experiment from the command line: a progress bar, its files written, the table and each rule's
verdict printed."""

from __future__ import annotations

import sys
from typing import Callable


def print_report(table: str, verdict: dict, files: dict[str, str], seconds: float) -> None:
    from .common import verdict_word

    print(table)
    for rule in verdict.get("rules", {}).values() or [verdict]:  # an experiment judged by several rules prints each
        named = f" \"{rule['rule']}\"" if "rule" in rule else ""
        print(f"\nclaim{named}: {rule['claim']}")
        print(f"verdict{named}: {verdict_word(rule['holds'])}: {rule['measured']}")
    print(f"\n{seconds:.0f} s; wrote " + ", ".join(files.values()))
    if not any(path.endswith(".png") for path in files.values()):
        from .common import NO_MATPLOTLIB

        print(NO_MATPLOTLIB, file=sys.stderr)


class ProgressBar:
    """A tqdm bar driven by a lab experiment's progress(done, total, message) callback."""

    def __init__(self, enabled: bool, unit: str) -> None:
        self.enabled, self.unit, self.bar = enabled, unit, None

    def __call__(self, done: int, total: int, message: str) -> bool:
        if self.enabled:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
            self.bar.set_description(message)
            self.bar.update(done - self.bar.n)
        return True  # never cancels: Ctrl-C does that here

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_experiment(args, unit: str, run: Callable, write: Callable, summarize: Callable) -> int:
    """Make --out, run with a progress bar, write the files, print table + verdict (narrow and gradients)."""
    from .common import prepare_out

    out = prepare_out(args.out, args.force)
    progress = ProgressBar(not args.no_progress, unit)
    try:
        result = run(progress)
    finally:
        progress.close()
    files = write(result, out)
    print_report(summarize(result), result.verdict(), files, result.seconds)
    return 0
