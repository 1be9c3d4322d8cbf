"""The user's path in ``make bench``: runs through the SDK (``sdk-seq``, ``sdk-conc``) and over HTTP (``http-conc``).

Each scenario runs governed (the README's policy with a USD budget) and, for the SDK ones, also with the
budget off, so the table shows what governance costs. Targets (issue 13, on a 2-core machine):

- ``sdk-seq``: >= 2,500 durable steps/s on SQLite, >= 1,200 on PostgreSQL;
- ``sdk-conc``: 1,000 runs within 12x the ideal wall on SQLite and 20x on PostgreSQL, peak RSS <= 150 MB;
  10,000 runs complete with peak RSS <= 400 MB;
- governed CPU per step <= 1.2x the same scenario with the budget off;
- database bytes per durable step (``sdk-seq``, budget on) <= 300 on SQLite, <= 600 on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEQ_TARGET = {"sqlite": 2500.0, "postgresql": 1200.0}
CONC_TARGET_RATIO = {"sqlite": 12.0, "postgresql": 20.0}
CONC_RSS_MB = 150.0
BIG_RSS_MB = 400.0
GOVERNANCE_CPU_RATIO = 1.2
BYTES_TARGET = {"sqlite": 300.0, "postgresql": 600.0}


@dataclass(frozen=True)
class UserPathPlan:
    """Sizes of the user's-path scenarios."""

    seq_runs: int = 200
    seq_turns: int = 10
    seq_reps: int = 3
    conc_runs: int = 1000
    conc_turns: int = 5
    conc_reps: int = 3
    big_runs: int = 10000
    latency_s: float = 0.05
    http_runs: int = 1000
    timeout_s: float = 600.0


Runner = Callable[[str, str, list[str], float], Any]
"""``run_scenario(name, db, argv, timeout)`` from ``benchmarks.run``."""
Argv = Callable[..., list[str]]
"""``scenario_argv(kind, db, **opts)`` from ``benchmarks.run``."""


def run_user_path(plan: UserPathPlan, dbs: list[str], run: Runner, argv: Argv) -> list[Any]:
    """Run every user's-path scenario; returns the outcomes (``benchmarks.run.Outcome``)."""
    outs: list[Any] = []
    for db in dbs:
        for budget in (True, False):
            flag = {} if budget else {"no_budget": ""}
            for rep in range(plan.seq_reps):
                a = argv("sdk-seq", db, runs=plan.seq_runs, turns=plan.seq_turns, timeout=plan.timeout_s, **flag)
                o = run("sdk-seq", db, _flags(a), plan.timeout_s)
                o.extra.update(rep=rep + 1, budget=budget)
                outs.append(o)
            for rep in range(plan.conc_reps):
                a = argv(
                    "sdk-conc",
                    db,
                    runs=plan.conc_runs,
                    turns=plan.conc_turns,
                    latency=plan.latency_s,
                    timeout=plan.timeout_s,
                    **flag,
                )
                o = run("sdk-conc", db, _flags(a), plan.timeout_s)
                o.extra.update(rep=rep + 1, budget=budget)
                outs.append(o)
        a = argv("floor-seq", db, runs=plan.seq_runs, turns=plan.seq_turns)
        o = run("floor-seq", db, a, plan.timeout_s)
        o.extra.update(rep=1, budget=False, floor=True)
        outs.append(o)
        a = argv("floor-conc", db, runs=plan.conc_runs, turns=plan.conc_turns, latency=plan.latency_s)
        o = run("floor-conc", db, a, plan.timeout_s)
        o.extra.update(rep=1, budget=False, floor=True)
        outs.append(o)
    if "sqlite" in dbs and plan.big_runs:
        a = argv(
            "sdk-conc",
            "sqlite",
            runs=plan.big_runs,
            turns=plan.conc_turns,
            latency=plan.latency_s,
            timeout=plan.timeout_s,
        )
        o = run("sdk-conc", "sqlite", a, plan.timeout_s)
        o.extra.update(rep=1, budget=True, big=True)
        outs.append(o)
    for db in dbs:
        a = argv(
            "http-conc", db, runs=plan.http_runs, turns=plan.conc_turns, latency=plan.latency_s, timeout=plan.timeout_s
        )
        o = run("http-conc", db, a, plan.timeout_s)
        o.extra.update(rep=1, budget=True)
        outs.append(o)
    return outs


def _flags(argv: list[str]) -> list[str]:
    """``--no-budget ''`` -> ``--no-budget`` (a switch)."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        out.append(a)
        if a == "--no-budget" and i + 1 < len(argv) and argv[i + 1] == "":
            skip = True
    return out


def _best(outs: list[Any], key: str, *, low: bool) -> Any | None:
    ok = [o for o in outs if o.ok and o.result is not None]
    if not ok:
        return None
    return (min if low else max)(ok, key=lambda o: o.result[key])


def _label(db: str) -> str:
    return "SQLite" if db == "sqlite" else "PostgreSQL"


def user_path_section(
    outs: list[Any],
    plan: UserPathPlan,
    summary: list[str],
    commands: Callable[..., list[str]],
    failures: Callable[..., list[str]],
) -> list[str]:
    """The markdown section of the user's-path scenarios (best of the repetitions, every repetition listed)."""
    lines = [
        "## 1. The user's path: SDK and HTTP, governed",
        "",
        f"`sdk-seq`: {plan.seq_runs} runs one after another with `Orchestrator.run`, {plan.seq_turns} model turns "
        f"each ({plan.seq_turns - 1} `add` tool calls, then the answer: {2 * plan.seq_turns - 1} durable steps), a "
        "zero-latency custom `Model` object priced as gpt-4.1-mini, policy "
        '`StrictPolicy(max_steps=40, max_cost_usd=100, timeout_s=600)` ("budget off": without `max_cost_usd`). '
        f"`sdk-conc`: {plan.conc_runs:,} runs started at once with `start_async` and awaited with `wait_async`, "
        f"{plan.conc_turns} model turns each, every model call sleeping {plan.latency_s * 1000:.0f} ms (ideal wall "
        f"{plan.conc_turns * plan.latency_s:.2f} s), same policy. `http-conc`: {plan.http_runs:,} runs created with "
        "`POST /v1/runs` on a real `maestro serve` process and followed to their end over SSE. `floor-seq` and "
        "`floor-conc` beside them: the same durable writes per step (a guarded run update, an event row, a step row) "
        "with the database driver alone, no engine (`benchmarks/floors.py`). Best of "
        f"{plan.seq_reps} for the SDK scenarios; CPU = process CPU time, all threads (for `http-conc`: the server's).",
        "",
        "| scenario | database | budget | runs | steps | wall s | steps/s | wall/ideal | CPU ms/step | peak RSS MiB "
        "| load avg | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    groups: dict[tuple[str, str, bool, bool], list[Any]] = {}
    for o in outs:
        groups.setdefault((o.name, o.db, bool(o.extra.get("budget")), bool(o.extra.get("big"))), []).append(o)
    cpu: dict[tuple[str, str, bool], float] = {}
    for (name, db, budget, big), group in groups.items():
        best = _best(group, "steps_per_s" if name.endswith("-seq") else "wall_s", low=not name.endswith("-seq"))
        if best is None:
            lines.append(f"| {name} | {_label(db)} | {'on' if budget else 'off'} | failed: {group[0].error} |||||||||")
            summary.append(f"{name} {_label(db)}: FAILED ({group[0].error})")
            continue
        r = best.result
        cpu[(name + ("-big" if big else ""), db, budget)] = r["cpu_ms_per_step"]
        target = "-"
        if name == "sdk-seq" and budget:
            met = r["steps_per_s"] >= SEQ_TARGET[db]
            target = f"{'met' if met else '**MISSED**'} (>= {SEQ_TARGET[db]:,.0f} steps/s)"
        elif name == "sdk-conc" and budget and big:
            met = r["peak_rss_mb"] <= BIG_RSS_MB
            target = f"{'met' if met else '**MISSED**'} (completes, RSS <= {BIG_RSS_MB:.0f} MB)"
        elif name == "sdk-conc" and budget:
            met = r["ratio"] <= CONC_TARGET_RATIO[db] and r["peak_rss_mb"] <= CONC_RSS_MB
            target = f"{'met' if met else '**MISSED**'} (<= {CONC_TARGET_RATIO[db]:g}x, RSS <= {CONC_RSS_MB:.0f} MB)"
        if name == "http-conc":
            target = f"streams cut: {r.get('stream_errors', 0)} of {r['runs']:,}"
        ratio = f"{r['ratio']:.1f}x" if "ratio" in r else "-"
        budget_cell = "(raw writes)" if name.startswith("floor") else ("on" if budget else "off")
        lines.append(
            f"| {name} | {_label(db)} | {budget_cell} | {r['runs']:,} | {r['steps']:,} "
            f"| {r['wall_s']:.2f} | {r['steps_per_s']:,.0f} | {ratio} | {r['cpu_ms_per_step']:.3f} "
            f"| {r.get('peak_rss_mb', r.get('peak_rss_mb_process', 0)):.0f} | {r.get('loadavg_before', 0):.1f} "
            f"| {target} |"
        )
        if name.startswith("floor"):
            summary.append(
                f"{name} {_label(db)} (raw driver writes, no engine): {r['steps_per_s']:,.0f} steps/s"
                + (f", {r['ratio']:.1f}x ideal" if "ratio" in r else "")
            )
            continue
        summary.append(
            f"{name} {_label(db)} budget {'on' if budget else 'off'}"
            + (f" ({r['runs']:,} runs)" if big else "")
            + f": {r['steps_per_s']:,.0f} steps/s, {r['cpu_ms_per_step']:.3f} CPU ms/step"
            + (f", {r['ratio']:.1f}x ideal" if "ratio" in r else "")
            + f", peak RSS {r['peak_rss_mb']:.0f} MiB"
            + (f"; target {target.replace('**', '')}" if target != "-" else "")
        )
    gov = []
    for name in ("sdk-seq", "sdk-conc"):
        for db in ("sqlite", "postgresql"):
            on, off = cpu.get((name, db, True)), cpu.get((name, db, False))
            if on and off:
                ratio = on / off
                gov.append(
                    f"- governance's CPU cost, {name} {_label(db)}: {on:.3f} / {off:.3f} ms per step = {ratio:.2f}x "
                    f"({'met' if ratio <= GOVERNANCE_CPU_RATIO else '**MISSED**'}: <= {GOVERNANCE_CPU_RATIO}x)"
                )
                summary.append(gov[-1][2:].replace("**", ""))
    sizes = []
    for (name, db, budget, big), group in groups.items():
        best = _best(group, "steps_per_s", low=False) if name == "sdk-seq" and budget and not big else None
        if best is None or "bytes" not in best.result:
            continue
        b = best.result["bytes"]
        met = b["alloc_per_step"] <= BYTES_TARGET[db]
        tables = ", ".join(f"{t} {v:,.0f}" for t, v in sorted(b["tables"].items(), key=lambda kv: -kv[1]))
        sizes.append(
            f"- database bytes per step, sdk-seq {_label(db)}: {b['alloc_per_step']:,.0f} allocated "
            f"({b['data_per_step']:,.0f} of live rows; by table with its indexes: {tables}) "
            f"({'met' if met else '**MISSED**'}: <= {BYTES_TARGET[db]:,.0f})"
        )
        summary.append(sizes[-1][2:].replace("**", ""))
    lines += ["", *gov, *sizes, "", "Commands:", "", *commands(outs), *failures(outs), ""]
    return lines
