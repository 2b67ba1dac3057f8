"""Measure how long ``load_rules`` takes to validate and compile 500 rule files.

Run: ``python benchmarks/rules_validate.py [--files 500] [--repeat 5]``.
The files are copies of ``rules/`` and ``examples/rules/`` with unique ids
and, so that no file reuses another's compiled conditions, a unique clause
appended to every condition. They are written to a temporary directory
that is removed afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rulesd.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[1]


def write_rule_files(directory: Path, count: int) -> None:
    """Write ``count`` valid rule files into ``directory``, cycling through the shipped rules."""
    candidates = sorted((ROOT / "rules").glob("*.yaml")) + sorted((ROOT / "examples" / "rules").glob("*.yaml"))
    templates = [path for path in candidates if not path.name.endswith(".test.yaml")]
    for index in range(count):
        template = templates[index % len(templates)]
        lines = template.read_text(encoding="utf-8").splitlines(keepends=True)
        on_line = next(line for line in lines if line.strip().startswith("on:"))
        trigger_alias = on_line.split(":", 1)[1].strip().split(".")[0]
        rewritten = []
        for line in lines:
            if line.startswith("rule:"):
                line = f"rule: bench-{index:04d}\n"
            elif line.strip().startswith(("if:", "stop_if:", "when:")):
                line = line.rstrip("\n") + f" and {trigger_alias}.id != {index}\n"
            rewritten.append(line)
        (directory / f"bench-{index:04d}.yaml").write_text("".join(rewritten), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500, help="number of rule files to validate")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best one is reported")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rulesd-bench-") as name:
        directory = Path(name)
        write_rule_files(directory, arguments.files)
        load_rules([directory])  # Warm up: build the parser and the schema validator once.
        timings = []
        cpu_timings = []
        for _ in range(arguments.repeat):
            started = time.perf_counter()
            cpu_started = time.process_time()
            result = load_rules([directory])
            timings.append(time.perf_counter() - started)
            cpu_timings.append(time.process_time() - cpu_started)
        if not result.ok or len(result.rules) != arguments.files:
            raise SystemExit(f"benchmark rules failed to load: {[d.message for d in result.errors][:3]}")
    median = sorted(timings)[len(timings) // 2]
    # CPU time is reported beside wall time because other processes on a
    # shared machine inflate wall time but not the CPU this process used.
    print(
        f"validated {arguments.files} rule files over {arguments.repeat} runs: "
        f"wall best {min(timings) * 1000:.0f} ms, median {median * 1000:.0f} ms; "
        f"CPU best {min(cpu_timings) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
