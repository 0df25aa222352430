"""The soak's report: invariant rows from the checks, the load summary, and rendering."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from soak_checks import Row, StoreView, call_rows, leak_rows, record_rows, render, summary_table
from soak_faults import FaultInjector
from soak_load import Load
from soak_observer import Observer
from soak_procs import ProcSample, ServiceProcess
from soak_settings import APP_A, APP_B, FAULT_TYPES, SoakSettings


@dataclass(frozen=True, slots=True)
class SoakReport:
    """What a soak run found: invariant rows, the load summary and the faults injected."""

    rows: tuple[Row, ...]
    summary: tuple[tuple[str, str], ...]
    faults: dict[str, int]
    workdir: Path

    @property
    def violations(self) -> int:
        """Violations of every invariant, known issues excepted."""
        return sum(r.violations or 0 for r in self.rows if not r.known_issue)

    @property
    def known(self) -> int:
        """Violations attributed to an already reported bug."""
        return sum(r.violations or 0 for r in self.rows if r.known_issue)

    def render(self) -> str:
        return "\n".join(
            [
                "load summary",
                summary_table(self.summary),
                "",
                render("invariants", self.rows),
                f"service logs and configs: {self.workdir}",
            ]
        )


def build_report(
    s: SoakSettings,
    workdir: Path,
    load: Load,
    observer: Observer,
    injector: FaultInjector,
    procs: list[ProcSample],
    view: StoreView,
    timing: tuple[float, float, str],
    services: tuple[ServiceProcess, ...],
    final_status: int | None,
) -> SoakReport:
    """Every invariant row plus the load summary."""
    load_end, drain_s, left = timing
    rows = record_rows(view, load.confirmations)
    rows += call_rows(observer.violations, observer.samples, view, s, observer.stasis_max)
    rows += leak_rows(procs, "a", load_end)
    stuck = 0 if not left else observer.live("inbound") + observer.live("callback")
    rows.append(
        Row(
            "load drained (no live callback, no call up)",
            f"{'drained' if not left else 'timeout: ' + left} after {drain_s:.0f} s",
            stuck,
        )
    )
    exits = [
        f"{svc.name}: exited on its own ({code}) at {time.strftime('%H:%M:%S', time.gmtime(t))}"
        for svc in services
        for t, code in svc.unexpected_exits
    ]
    bad_stops = [
        f"{svc.name}: SIGTERM -> exit {c}" for svc in services for c in svc.exit_statuses if c != 0
    ]
    rows.append(
        Row(
            "no unexpected service exit; SIGTERM exits 0",
            f"final stop of a: exit {final_status}; {sum(v.incarnations for v in services)} starts",
            len(exits) + len(bad_stops),
            tuple(exits + bad_stops),
        )
    )
    missing = [k for k in FAULT_TYPES if injector.counts[k] == 0]
    rows.append(
        Row(
            "every fault type injected as planned",
            " ".join(f"{k}={injector.counts[k]}" for k in FAULT_TYPES),
            len(missing) + len(injector.failures),
            tuple(f"{k} never injected" for k in missing) + tuple(injector.failures),
        )
    )
    rows.append(Row("observer saw every fake event", "", observer.counts["observer_missed_events"]))
    return SoakReport(
        tuple(rows),
        tuple(_summary(s, load, observer, view, load_end, injector)),
        dict(injector.counts),
        workdir,
    )


def _summary(
    s: SoakSettings,
    load: Load,
    observer: Observer,
    view: StoreView,
    load_end: float,
    injector: FaultInjector,
) -> list[tuple[str, str]]:
    st, oc = load.stats, observer.counts
    states = Counter(cb.state.value for cb in view.records.values())
    outcomes = Counter(cb.last_outcome or "-" for cb in view.records.values())
    attempts = sum(cb.attempts for cb in view.records.values())
    scripts = " ".join(f"{k[7:]}={v}" for k, v in sorted(st.items()) if k.startswith("script_"))
    return [
        (
            "load",
            f"{load_end:.0f} s wall, rate {s.rate}/s, seed {s.seed}, time_scale {s.time_scale}, "
            f"agents " + ", ".join(f"{q.name}={q.agents}" for q in s.queues),
        ),
        (
            "calls (inbound)",
            f"{st['calls']} ({st['arrivals_skipped_all_busy']} arrivals skipped: "
            f"all drawn customers already on the phone)",
        ),
        ("caller scripts", scripts),
        ("answered by an agent (inbound)", str(oc["inbound_agent_connects"])),
        ("abandoned while holding", str(st["abandoned_in_queue"])),
        (
            "offers (StasisStart offer / offer prompts heard)",
            f"{oc['stasis_offer']} / {st['offers_heard']} (exit digit pressed {st['exit_digit']})",
        ),
        ("accepted (confirmations)", str(st["confirmations"])),
        (
            "after confirming heard",
            f"stored {st['heard_stored']}, already pending "
            f"{st['heard_existing']}, sorry (store failed) {st['heard_sorry']}",
        ),
        (
            "declined / silent / wrong key / mistyped",
            f"{st['declined']} (+{st['declined_being_called']} being called back) / "
            f"{st['silent']} / {st['wrong_keys']} / {st['mistyped']}",
        ),
        (
            "hung up at offer / read-back / number entry / being called back meanwhile",
            f"{st['hangup_at_offer']} / {st['hangup_at_confirm']} / {st['hangup_at_entry']} / "
            f"{st['hangup_being_called_back']}",
        ),
        (
            "callbacks (records)",
            f"{len(view.records)}: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items())),
        ),
        ("last outcomes", ", ".join(f"{k}={n}" for k, n in sorted(outcomes.items()))),
        (
            "dial attempts (records) / originates seen",
            f"{attempts} / {oc['originates']} "
            f"(a: {oc['originates_' + APP_A]}, b: {oc['originates_' + APP_B]})",
        ),
        (
            "callbacks dialled while the customer was still on their inbound call",
            f"{oc['dialled_while_caller_on_line']} of {oc['originates']} originates (the fake's "
            "phone answers anyway; a real line would be busy)",
        ),
        (
            "connected (records) / callbacks that reached an agent",
            f"{states['connected']} / {len(observer.bridged_callbacks)}",
        ),
        (
            "service ARI requests answered 409 (channel not in Stasis, id in use)",
            str(oc["ari_409"]),
        ),
        ("faults injected", " ".join(f"{k}={injector.counts[k]}" for k in FAULT_TYPES)),
        (
            "fault log",
            "; ".join(f"{k}({d})" for _, k, d in injector.log[:12])
            + (" ..." if len(injector.log) > 12 else ""),
        ),
        ("harness errors", ", ".join(f"{k}={v}" for k, v in load.sched.errors.items()) or "none"),
    ]
