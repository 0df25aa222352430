"""``callback-ari simulate``: compare offer thresholds on a simulated queue before going live.

Runs the discrete-event model in ``simqueue`` once per candidate threshold (plus the
no-callback baseline) with the same seed, so every run sees the same callers, and reports
what an administrator weighs: how long live callers hold, how many give up, how many
callbacks are made and what they cost in attempts and idle agent time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from callback_ari.sim.simqueue import QueueModel, SimParams, SimStats

__all__ = [
    "SimParams",
    "SimResult",
    "compare_modes",
    "compare_thresholds",
    "erlang_c_wait",
    "format_table",
    "parse_thresholds",
    "plot_hold_distribution",
    "run_simulation",
]


@dataclass(frozen=True, slots=True)
class SimResult:
    """The report of one run. Durations in seconds; None where nothing was measured."""

    threshold: int | None  # None: callbacks never offered (baseline)
    seed: int
    callers: int
    served_live: int
    abandoned: int
    abandon_rate: float  # abandoned / callers
    avg_hold_s: float  # live holds: until answered, abandoned or a callback accepted
    p90_hold_s: float
    max_hold_s: float
    avg_answer_wait_s: float  # hold of callers answered live (what Erlang C predicts)
    offers: int
    callbacks_requested: int
    callbacks_connected: int
    callbacks_failed: int
    callbacks_expired: int
    attempts: int
    attempts_per_connected: float | None
    agent_idle_pending_s: float  # agent-seconds free while a callback was live
    request_to_callback_p50_s: float | None
    request_to_callback_p90_s: float | None
    utilisation: float  # talk time / (agents x elapsed)
    live_holds_s: tuple[float, ...] = field(default=(), repr=False)
    dialing_mode: str = "customer_first"
    wait_after_answer_p50_s: float | None = None  # connected callbacks: answering -> agent
    wait_after_answer_p90_s: float | None = None
    agent_held_per_connected_s: float | None = None  # agent time held by attempts / connected

    @property
    def label(self) -> str:
        return "none" if self.threshold is None else f"{self.threshold}s"


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of ``values`` (0.0 for an empty sequence)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _result(params: SimParams, threshold: int | None, seed: int, s: SimStats) -> SimResult:
    connected = s.callbacks_connected
    capacity = params.agents * s.elapsed_s
    return SimResult(
        threshold=threshold,
        seed=seed,
        callers=s.callers,
        served_live=s.served_live,
        abandoned=s.abandoned,
        abandon_rate=s.abandoned / s.callers if s.callers else 0.0,
        avg_hold_s=_mean(s.live_holds_s),
        p90_hold_s=_quantile(s.live_holds_s, 0.9),
        max_hold_s=max(s.live_holds_s, default=0.0),
        avg_answer_wait_s=_mean(s.served_holds_s),
        offers=s.offers,
        callbacks_requested=s.callbacks_requested,
        callbacks_connected=connected,
        callbacks_failed=s.callbacks_failed,
        callbacks_expired=s.callbacks_expired,
        attempts=s.attempts,
        attempts_per_connected=s.attempts / connected if connected else None,
        agent_idle_pending_s=s.agent_idle_pending_s,
        request_to_callback_p50_s=(
            _quantile(s.request_to_connect_s, 0.5) if s.request_to_connect_s else None
        ),
        request_to_callback_p90_s=(
            _quantile(s.request_to_connect_s, 0.9) if s.request_to_connect_s else None
        ),
        utilisation=s.agent_busy_s / capacity if capacity else 0.0,
        live_holds_s=s.live_holds_s,
        dialing_mode=params.dialing_mode,
        wait_after_answer_p50_s=(
            _quantile(s.customer_waits_s, 0.5) if s.customer_waits_s else None
        ),
        wait_after_answer_p90_s=(
            _quantile(s.customer_waits_s, 0.9) if s.customer_waits_s else None
        ),
        agent_held_per_connected_s=s.agent_held_s / connected if connected else None,
    )


def run_simulation(params: SimParams, threshold: int | None, seed: int) -> SimResult:
    """Simulate ``params`` with callbacks offered after ``threshold`` s of hold (None = never)."""
    if threshold is not None and threshold < 0:
        raise ValueError(f"threshold must be >= 0 or None, got {threshold}")
    return _result(params, threshold, seed, QueueModel(params, threshold, seed).run())


def compare_thresholds(
    params: SimParams, thresholds: Sequence[int | None], seed: int
) -> list[SimResult]:
    """One result per threshold, the no-callback baseline first (added when not asked for)."""
    wanted: list[int | None] = [None]
    wanted += [t for t in dict.fromkeys(thresholds) if t is not None]
    return [run_simulation(params, t, seed) for t in wanted]


def compare_modes(
    params: SimParams, thresholds: Sequence[int | None], seed: int, modes: Sequence[str]
) -> list[SimResult]:
    """``compare_thresholds`` once per dialing mode; the baseline (no callbacks) once."""
    out: list[SimResult] = []
    for n, mode in enumerate(dict.fromkeys(modes)):
        results = compare_thresholds(replace(params, dialing_mode=mode), thresholds, seed)
        out += results if n == 0 else [r for r in results if r.threshold is not None]
    return out


def parse_thresholds(text: str) -> list[int | None]:
    """``"none,60,120"`` -> ``[None, 60, 120]`` (for the command line)."""
    out: list[int | None] = []
    for part in text.split(","):
        item = part.strip().lower()
        if not item:
            continue
        if item in ("none", "off", "baseline"):
            out.append(None)
            continue
        try:
            value = int(item.removesuffix("s"))
        except ValueError:
            raise ValueError(f"threshold {part.strip()!r} is not a number of seconds") from None
        if value <= 0:
            raise ValueError(f"threshold must be > 0 seconds, got {value}")
        out.append(value)
    return out


def erlang_c_wait(arrival_rate_per_s: float, mean_handle_s: float, agents: int) -> float:
    """Average wait in queue W_q of an M/M/c queue (Erlang C); inf when load >= agents."""
    load = arrival_rate_per_s * mean_handle_s
    if load >= agents:
        return math.inf
    erlang_b = 1.0
    for k in range(1, agents + 1):
        erlang_b = load * erlang_b / (k + load * erlang_b)
    p_wait = agents * erlang_b / (agents - load * (1.0 - erlang_b))
    return p_wait * mean_handle_s / (agents - load)


# --- presentation -----------------------------------------------------------------------


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_COLUMNS = (
    "threshold", "avg hold", "p90 hold", "max hold", "abandon", "callbacks", "connected",
    "att/conn", "idle w/ cb", "req->cb p50", "req->cb p90", "mode", "ans->agent p50",
    "ans->agent p90", "held/conn",
)  # fmt: skip


def _row(r: SimResult) -> tuple[str, ...]:
    per = r.attempts_per_connected
    return (
        r.label,
        _dur(r.avg_hold_s),
        _dur(r.p90_hold_s),
        _dur(r.max_hold_s),
        f"{100 * r.abandon_rate:.1f}%",
        str(r.callbacks_requested),
        str(r.callbacks_connected),
        "-" if per is None else f"{per:.2f}",
        f"{r.agent_idle_pending_s / 60:.0f} min",
        _dur(r.request_to_callback_p50_s),
        _dur(r.request_to_callback_p90_s),
        "-" if r.threshold is None else r.dialing_mode,
        _dur(r.wait_after_answer_p50_s),
        _dur(r.wait_after_answer_p90_s),
        _dur(r.agent_held_per_connected_s),
    )


def format_table(results: Sequence[SimResult]) -> str:
    """An aligned text table, one row per threshold (durations as m:ss or h:mm:ss).

    "hold" is live callers' time on hold; "idle w/ cb" is agent time spent free (or waiting
    for a callback to answer) while callbacks were outstanding. "ans->agent" is a connected
    customer's wait from answering to an agent; "held/conn" the agent time callback attempts
    held a member (ringing, "press 1", whisper), divided by the connected callbacks.
    """
    rows = [_COLUMNS, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_title(params: SimParams | None) -> tuple[str, str]:
    """The plot's title and its line of parameters (empty without ``params``)."""
    title = "callback-ari simulate: hold time by offer threshold"
    if params is None:
        return title, ""
    patience = "nobody abandons" if params.mean_patience_s is None else (
        f"patience {params.mean_patience_s:g} s"
    )  # fmt: skip
    load = params.arrivals_per_hour * (params.mean_handle_s + params.wrapup_s) / 3600
    line = (
        f"{params.arrivals_per_hour:g} calls/h, handle {params.mean_handle_s:g} s, "
        f"wrap-up {params.wrapup_s:g} s, {params.agents} agents ({load / params.agents:.0%} load), "
        f"{patience}, accept {params.accept_probability:.0%}, answer "
        f"{params.answer_probability:.0%}, retry {params.retry_interval_s:g} s x "
        f"{params.max_attempts}, {params.hours:g} h"
    )
    return title, line


def plot_hold_distribution(
    results: Sequence[SimResult], path: str | Path, *, params: SimParams | None = None
) -> Path:
    """Write a PNG: the share of live callers still holding after x minutes, per threshold,
    and beside it the cost side: agent time idle while callbacks waited, and abandonment.
    """
    import matplotlib  # lazily: the service never needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cost) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    try:
        title, line = plot_title(params)
        fig.suptitle(title + ("\n" + line if line else ""), fontsize=10)
        for r in results:
            holds = sorted(r.live_holds_s)
            if not holds:
                continue
            n = len(holds)
            xs = [h / 60 for h in holds]
            ys = [(n - i) / n for i in range(n)]  # holding at least x; never 0 (log axis)
            name = "no callbacks" if r.threshold is None else f"offer at {r.label}"
            ax.step(xs, ys, where="post", label=name)
        ax.set_xlabel("minutes on hold")
        ax.set_ylabel("share of callers still holding")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ax.set_title("the benefit: shorter holds", fontsize=10)
        labels = ["none" if r.threshold is None else r.label for r in results]
        xs = list(range(len(results)))
        idle = [r.agent_idle_pending_s / 60 for r in results]
        cost.bar(xs, idle, color="tab:orange", label="agent idle while a callback waited (min)")
        cost.set_xticks(xs, labels)
        cost.set_xlabel("offer threshold")
        cost.set_ylabel("agent minutes idle with callbacks pending")
        cost.set_title("the cost: agent time and abandonment", fontsize=10)
        rate = cost.twinx()
        rate.plot(xs, [r.abandon_rate * 100 for r in results], "o-", color="tab:red",
                  label="abandoned (%)")  # fmt: skip
        rate.set_ylabel("callers abandoning (%)")
        rate.set_ylim(bottom=0)
        handles = cost.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
        cost.legend(handles, [str(h.get_label()) for h in handles], loc="upper right",
                    fontsize=8)  # fmt: skip
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        out = Path(path)
        fig.savefig(out, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out
