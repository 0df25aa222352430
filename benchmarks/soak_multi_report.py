"""The multi-PBX soak's report: invariant rows, per-mode waits, the load summary.

Rows reuse ``soak_checks`` where the question is the same as in the simulated soak (records
accounted for, promises kept, no phantoms, memory and fds); the rest come from the real
PBXs' AMI (soak_multi_observer.py). Tasks: the number of asyncio tasks each service process
reported (soak_multi_topology.py ``serve``), judged like memory: after a warm-up, the median
of the last third of the longest-lived incarnation must not exceed the first third's by more
than 25 % + 5.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from soak_checks import (
    CLOCK_SLACK_MS,
    Row,
    StoreView,
    leak_rows,
    record_rows,
    render,
    summary_table,
)
from soak_multi_faults import FAULT_TYPES, FaultInjector
from soak_multi_load import Load
from soak_multi_observer import Observer
from soak_multi_topology import PbxDef, ServiceNode, read_tasks
from soak_procs import ProcSample

from callback_ari.models import Callback

if TYPE_CHECKING:
    from soak_multi import MultiSettings

FAIR_SLACK_MS = 200  # CB_JOIN (PBX clock, dialplan) vs the harness's placement time


@dataclass(frozen=True, slots=True)
class MultiReport:
    rows: tuple[Row, ...]
    waits: str
    summary: tuple[tuple[str, str], ...]
    workdir: Path

    @property
    def violations(self) -> int:
        return sum(r.violations or 0 for r in self.rows if not r.known_issue)

    def render(self) -> str:
        return "\n".join([
            "load summary", summary_table(self.summary), "",
            render("invariants (2 PBXs x 2 instances, one Sentinel set)", self.rows), "",
            self.waits, f"service logs, configs and stats: {self.workdir}",
        ])  # fmt: skip


def _of(observer: Observer, check: str) -> tuple[str, ...]:
    return tuple(v.detail for v in observer.violations if v.check == check)


def _pct(values: list[float], p: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(p * len(ordered)))]:.2f}"


def wait_table(observer: Observer) -> str:
    lines = [
        "per dialling mode, connected callbacks (seconds, from the PBXs' AMI):",
        f"  {'mode':<15} {'n':>5} {'customer wait after answering p50/p90':>38} "
        f"{'agent idle per callback p50/p90':>32}",
    ]
    for mode in ("customer_first", "agent_first"):
        rows = observer.waits.get(mode, [])
        w, idle = [r[0] for r in rows], [r[1] for r in rows]
        lines.append(
            f"  {mode:<15} {len(rows):>5} {_pct(w, 0.5) + ' / ' + _pct(w, 0.9):>38} "
            f"{_pct(idle, 0.5) + ' / ' + _pct(idle, 0.9):>32}"
        )
    after = [r[0] for r in observer.waits.get("customer_first_after_1", [])]
    lines.append(
        f"  customer_first after the customer pressed 1 (DTMF seen on the channel): n "
        f"{len(after)}, p50 {_pct(after, 0.5)}, p90 {_pct(after, 0.9)} (the scripted customer "
        "presses 1 two seconds after answering)"
    )
    lines.append(
        "  customer wait: customer_first = customer's channel Up -> AgentConnect; agent_first "
        "= customer leg Up -> DialEnd ANSWER.\n  agent idle: the member held for the callback "
        "without talking to the customer: customer_first = attempt originated (member\n"
        "  reserved) -> AgentConnect; agent_first = agent leg originated -> customer answered."
    )
    return "\n".join(lines)


def task_rows(nodes: list[ServiceNode]) -> list[Row]:
    rows = []
    for node in nodes:
        samples = read_tasks(node.stats_path)
        by_pid: defaultdict[int, list[tuple[float, int]]] = defaultdict(list)
        for t, pid, tasks in samples:
            by_pid[pid].append((t, tasks))
        if not by_pid:
            rows.append(Row(f"asyncio tasks flat ({node.name})", "no samples", None))
            continue
        run = max(by_pid.values(), key=lambda xs: xs[-1][0] - xs[0][0])
        span = run[-1][0] - run[0][0]
        warm = min(120.0, span / 4)
        kept = [n for t, n in run if t - run[0][0] >= warm]
        third = max(1, len(kept) // 3)
        a, b = statistics.median(kept[:third]), statistics.median(kept[-third:])
        judged = span - warm >= 120.0
        bad = b > a * 1.25 + 5
        rows.append(
            Row(
                f"asyncio tasks flat ({node.name}): last third median <= first x1.25 + 5",
                f"{a:.0f} -> {b:.0f} (max {max(kept)}), {span - warm:.0f} s judged"
                + ("" if judged else " (not judged: < 120 s)"),
                (1 if bad else 0) if judged else None,
            )
        )
    return rows


def _record(view: StoreView, cb_id: str, t: float) -> Callback | None:
    """The record an attempt at ``t`` belongs to: none if the record with this id was created
    after it (ids start again after the store lost its data; the promise rows count that)."""
    cb = view.records.get(cb_id)
    if cb is None or cb.created_ms > t * 1000 + CLOCK_SLACK_MS:
        return None
    return cb


def _fairness(observer: Observer, view: StoreView, boost: int) -> list[Row]:
    rows = []
    for label, attr in (
        ("fairness: callback join < oldest waiting caller's Queue() entry + boost", "entry"),
        ("fairness vs first arrival of waiting callers + boost (200 ms slack)", "origin"),
    ):
        judged, details = 0, []
        for smp in observer.samples:
            oldest = smp.oldest_entry if attr == "entry" else smp.oldest_origin
            cb = _record(view, smp.cb_id, smp.t)
            if oldest is None or cb is None:
                continue
            judged += 1
            bound = oldest * 1000 + boost * 1000 + (FAIR_SLACK_MS if attr == "origin" else 0)
            if cb.join_time_ms >= bound:
                details.append(
                    f"{smp.queue}: callback {smp.cb_id} a{smp.attempt} (joined "
                    f"{cb.join_time_ms}) at {smp.t:.3f} ahead of a caller waiting since "
                    f"{oldest * 1000:.0f}"
                )
        rows.append(Row(label, f"{judged} attempts with callers waiting", len(details),
                        tuple(details)))  # fmt: skip
    return rows


def build_report(s: MultiSettings, workdir: Path, pbxs: list[PbxDef], load: Load,
                 observer: Observer, injector: FaultInjector, procs: list[ProcSample],
                 view: StoreView, timing: tuple[float, float, str], nodes: list[ServiceNode],
                 statuses: list[int | None]) -> MultiReport:  # fmt: skip
    load_end, drain_s, left = timing
    rows = record_rows(view, load.confirmations)
    live = [cb for cb in view.records.values() if not cb.state.is_terminal]
    rows.append(Row("every callback final after the drain (none left live)",
                    f"{len(view.records) - len(live)} of {len(view.records)} final", len(live),
                    tuple(f"{cb.id} {cb.queue} {cb.state.value}" for cb in live)))  # fmt: skip
    host = {q.name: p.name for p in pbxs for q in p.queues}
    wrong = list(_of(observer, "wrong_pbx")) + list(_of(observer, "unknown_queue"))
    twice = []
    for cb_id, every in observer.attempts.items():
        cb = view.records.get(cb_id)
        chans = [c for c in every if cb is None or _record(view, cb_id, c.created) is cb]
        if cb is not None:
            wrong += [f"{c.uid} on {c.pbx}, queue {cb.queue} is on {host.get(cb.queue)}"
                      for c in chans if host.get(cb.queue) != c.pbx]  # fmt: skip
        bridged = [c.uid for c in chans if c.bridged]
        if len(bridged) > 1:
            twice.append(f"callback {cb_id}: {', '.join(bridged)} all reached an agent")
    n = observer.counts["attempts"]
    rows += [
        Row("one live attempt per callback at a time (both PBXs)", f"{n} attempts",
            len(_of(observer, "double_originate")), _of(observer, "double_originate")),
        Row("a callback reaches an agent at most once", f"{len(observer.attempts)} callbacks",
            len(twice), tuple(twice)),
        Row("no number dialled twice at once (both PBXs, all instances)",
            f"{observer.counts['customer_legs']} customer legs",
            len(_of(observer, "number_twice")), _of(observer, "number_twice")),
        Row("  a number dialled while already talking to an agent for another callback",
            f"{len(_of(observer, 'number_talking'))} customer legs",
            len(_of(observer, "number_talking")), _of(observer, "number_talking"),
            known_issue="README: the per-number lock ends at AgentConnect"),
        Row("every attempt on the PBX that hosts its queue",
            " ".join(f"{p.name}={observer.counts['attempts_' + p.name]}" for p in pbxs),
            len(wrong), tuple(wrong)),
    ]  # fmt: skip
    rows += _fairness(observer, view, s.timing.priority_boost)
    rows += [
        Row("capacity: members talking + attempts in flight <= members (per queue)",
            f"{observer.counts['capacity_samples']} attempts judged",
            len(_of(observer, "capacity")), _of(observer, "capacity")),
        Row("  excess explained by app_queue connecting a live caller at that moment",
            f"{len(_of(observer, 'capacity_race'))} attempts",
            len(_of(observer, "capacity_race")), _of(observer, "capacity_race"),
            known_issue="README: app_queue may give the member to a live caller first"),
    ]  # fmt: skip
    for node in nodes:
        rows += [
            Row(f"{r.check} ({node.name})", r.value, r.violations)
            for r in leak_rows(procs, node.name, load_end)
        ]
    rows += task_rows(nodes)
    rows.append(Row("load drained (no live callback, no call up)",
                    f"{'drained' if not left else 'timeout: ' + left} after {drain_s:.0f} s",
                    0 if not left else 1))  # fmt: skip
    exits = [f"{nd.name}: exited on its own ({code}) at "
             f"{time.strftime('%H:%M:%S', time.gmtime(t))}"
             for nd in nodes for t, code in nd.unexpected_exits]  # fmt: skip
    bad = [f"{nd.name}: SIGTERM -> {st}" for nd, st in zip(nodes, statuses, strict=True)
           if st not in (0, None)]  # fmt: skip
    rows.append(Row("no unexpected service exit; SIGTERM exits 0",
                    f"{sum(nd.incarnations for nd in nodes)} starts of {len(nodes)} instances",
                    len(exits) + len(bad), tuple(exits + bad)))  # fmt: skip
    own = _of(observer, "harness_error")
    rows.append(Row("the soak's own event handling raised nothing", "", len(own), own))
    short = [f"{k}: {injector.counts[k]} < {s.faults_per_type}" for k in FAULT_TYPES
             if injector.counts[k] < s.faults_per_type]  # fmt: skip
    rows.append(Row("every fault injected as planned",
                    " ".join(f"{k}={injector.counts[k]}" for k in FAULT_TYPES),
                    len(short) + len(injector.failures),
                    tuple(short) + tuple(injector.failures)))  # fmt: skip
    return MultiReport(tuple(rows), wait_table(observer),
                       tuple(_summary(s, load, observer, view, nodes, injector, load_end)),
                       workdir)  # fmt: skip


def _summary(s: MultiSettings, load: Load, observer: Observer, view: StoreView,
             nodes: list[ServiceNode], injector: FaultInjector,
             load_end: float) -> list[tuple[str, str]]:  # fmt: skip
    st, oc = load.stats, observer.counts
    states = Counter(cb.state.value for cb in view.records.values())
    outcomes = Counter(cb.last_outcome or "-" for cb in view.records.values())
    errors = Counter(e for nd in nodes for e in nd.errors())
    plans = " ".join(f"{k[5:]}={v}" for k, v in sorted(st.items()) if k.startswith("plan_"))
    per_q = " ".join(f"{k[6:]}={v}" for k, v in sorted(st.items()) if k.startswith("calls_"))
    return [
        ("load", f"{load_end:.0f} s wall, rate {s.rate}/s, seed {s.seed}, PBXs "
         + ", ".join(b.name for b in s.boxes)),
        ("calls (inbound)", f"{st['calls']} ({per_q}); skipped: PBX down "
         f"{st['arrivals_skipped_pbx_down']}, cap {st['arrivals_skipped_cap']}"),
        ("caller plans", f"{plans}; regulars {st['regular_calls']}"),
        ("offers heard / confirmations / promised (RouteResult CALLBACK)",
         f"{st['offers_heard']} / {st['confirmations']} / {st['promised']}"),
        ("hung up at offer / gave up holding", f"{st['hung_up_at_offer']} / "
         f"{st['gave_up_holding']}"),
        ("callbacks (records)", f"{len(view.records)}: "
         + ", ".join(f"{n} {k}" for k, n in sorted(states.items()))),
        ("last outcomes", ", ".join(f"{k}={n}" for k, n in sorted(outcomes.items()))),
        ("attempts seen / bridged to an agent", f"{oc['attempts']} / customer_first "
         f"{oc['customer_first_bridged']}, agent_first {oc['agent_first_bridged']}"),
        ("live callers connected by app_queue", str(oc["live_connects"])),
        ("customer legs dialled while the same number had an inbound call up",
         str(oc["dialled_while_inbound_up"])),
        ("faults injected", " ".join(f"{k}={injector.counts[k]}" for k in FAULT_TYPES)),
        ("fault log", "; ".join(f"{t:.0f}s {k}({d})" for t, k, d in injector.log)),
        ("service error events (all instances)",
         ", ".join(f"{k}={v}" for k, v in errors.most_common(8)) or "none"),
        ("harness", ", ".join(f"{k}={v}" for k, v in sorted(st.items())
                              if k.startswith(("place_failed", "press_failed", "promise_w")))
         or "no errors"),
    ]  # fmt: skip
