"""How long ``maestro`` commands take to start: ``python -m benchmarks.cli_startup [--write] [--repeat N]``.

Each command runs ``--repeat`` times (default 10) as a fresh process from a scratch folder, on an SQLite
database migrated and given one run beforehand, after one warm-up run. Compiled bytecode is cached (in a
scratch ``PYTHONPYCACHEPREFIX``, even when ``PYTHONDONTWRITEBYTECODE`` is set here), as it is for a user
whose ``make setup`` compiled the package: without it every process compiles SQLAlchemy & co. from source,
about a second more. Reported:
median and best wall time, and median CPU time (user + system) of the process, which is less sensitive to
other load on the machine. Targets (issue 16): ``maestro --help`` <= 0.3 s, ``maestro runs list`` <= 0.6 s,
judged on the median wall time.

``--write`` replaces the "CLI start-up" section of ``benchmarks/RESULTS.md`` (``python -m benchmarks.run``
writes the same section as part of a full run).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TITLE = "## 6. CLI start-up"
COMMANDS: list[tuple[list[str], float | None]] = [
    (["--help"], 0.3),
    (["runs", "list"], 0.6),
    (["states"], None),
    (["agents", "list"], None),
    (["workflows", "list"], None),
    (["knowledge", "list"], None),
    (["usage"], None),
]
"""Arguments after ``maestro``, and the target in seconds (median wall) where there is one."""


@dataclass(frozen=True)
class Timing:
    """One command's measurements."""

    args: list[str]
    walls: list[float]
    cpus: list[float]
    target: float | None

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    def row(self) -> str:
        target = "-" if self.target is None else f"<= {self.target:.1f} s: " + self.verdict()
        return (
            f"| `maestro {' '.join(self.args)}` | {self.median_wall:.3f} | {min(self.walls):.3f} | "
            f"{statistics.median(self.cpus):.3f} | {target} |"
        )

    def verdict(self) -> str:
        return "met" if self.target is not None and self.median_wall <= self.target else "MISSED"


def _time(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(repeat: int = 10) -> tuple[list[Timing], float, str]:
    """Time every command; also ``python -c pass`` (the floor). Returns timings, the floor and the load average."""
    maestro = str(Path(sys.executable).parent / "maestro")
    folder = Path(tempfile.mkdtemp(prefix="maestro-cli-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")  # compiled bytecode kept, as for any user (make setup)
    env["MAESTRO_HOME"] = str(folder / "home")
    env["MAESTRO_DATABASE_URL"] = f"sqlite:///{folder / 'maestro.db'}"
    try:
        _time([maestro, "run", "calculator", "What is (2 + 3) * 4?", "--wait"], folder, env)  # migrate, one run
        floor = statistics.median(_time([sys.executable, "-c", "pass"], folder, env)[0] for _ in range(repeat))
        timings = []
        for args, target in COMMANDS:
            _time([maestro, *args], folder, env)  # warm-up: bytecode compiled and cached
            samples = [_time([maestro, *args], folder, env) for _ in range(repeat)]
            timings.append(Timing(args, [w for w, _ in samples], [c for _, c in samples], target))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return timings, floor, load
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def section(timings: list[Timing], floor: float, load: str, repeat: int) -> list[str]:
    """The markdown section for RESULTS.md."""
    return [
        TITLE,
        "",
        f"Each command ran {repeat} times as a fresh process (after one warm-up run), in a scratch folder on an "
        "SQLite database holding one run; seconds. CPU = user + system time of the process. "
        f"`python -c pass` alone takes {floor:.3f} s (median) here. 1-minute load average after the runs: "
        f"{load.split()[0]} on {os.cpu_count()} CPUs"
        + (" (a busy machine: wall times are pessimistic, CPU times less so)." if _busy(load) else ".")
        + " Command: `.venv/bin/python -m benchmarks.cli_startup --write`.",
        "",
        "| command | median wall | best wall | median CPU | target |",
        "|---|---|---|---|---|",
        *(t.row() for t in timings),
        "",
    ]


def summary_lines(timings: list[Timing]) -> list[str]:
    """One summary line per command with a target."""
    return [
        f"CLI start-up `maestro {' '.join(t.args)}`: median {t.median_wall:.3f} s (best {min(t.walls):.3f} s, "
        f"CPU {statistics.median(t.cpus):.3f} s); target {t.verdict()} (<= {t.target} s)"
        for t in timings
        if t.target is not None
    ]


def _busy(load: str) -> bool:
    return float(load.split()[0]) > (os.cpu_count() or 1)


def write_section(lines: list[str], path: Path) -> None:
    """Replace (or append) the CLI start-up section of a RESULTS.md file."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# AgentMaestro benchmarks\n"
    start = text.find(TITLE)
    if start == -1:
        text = text.rstrip() + "\n\n" + "\n".join(lines)
    else:
        end = text.find("\n## ", start + len(TITLE))
        rest = text[end + 1 :] if end != -1 else ""
        text = text[:start] + "\n".join(lines) + ("\n" + rest if rest else "")
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cli_startup", description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10, help="runs per command (default 10)")
    p.add_argument("--write", action="store_true", help="update the section in benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    timings, floor, load = measure(args.repeat)
    lines = section(timings, floor, load, args.repeat)
    print("\n".join(lines))
    if args.write:
        write_section(lines, BENCH_DIR / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
