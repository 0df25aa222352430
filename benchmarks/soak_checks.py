"""The soak's invariants, evaluated after the drain, and the tables that report them.

What each row measures (the observer in ``soak_observer`` samples the fake synchronously):

- accounted for: every id 1..``<p>:seq`` has a decodable hash; live ones sit in the index of
  their state (pending: ready/sched, retry_wait: retry with next_attempt_ms, dialing: dial
  with a lease). A record missing from every index would never be dialled: lost.
- promises kept: each confirmation (the caller pressed 1 at "if this is correct") after which
  the caller heard "stored" or "already pending" has a record for (queue, number) created no
  later than that (1 s clock slack). Phantoms: a record with no confirmation before it.
- one originate per callback: at each originate, no other channel of the same callback id is
  alive (lifetimes: originate request -> AMI Hangup). Per number: no live channel of a
  different callback id to the same number.
- fairness: at each originate, the callback's stored join time < (join time of the oldest
  non-callback caller waiting in that Queue() in the fake + the queue's priority_boost).
  Callers that joined less than 1 s before the originate are left out (they may not have
  reached the service over AMI when it claimed). Once with app_queue's Queue() entry time,
  once with the caller's first arrival (CB_JOIN, which the kit keeps across re-joins).
- capacity: at each originate, in flight = live callback channels of that queue not yet
  bridged to an agent (AgentConnect), this one included; allowed = members ready in the fake
  (free, not paused, wrap-up over) + live callers app_queue connected since 1 s before the
  oldest in-flight originate (app_queue took the member the service had counted: the race
  policy.py documents). Excesses where another instance's or a killed process's calls were in
  flight or took a member, or explained by a wrap-up ending within 1 s right after an AMI
  resync, are reported on their own rows as known issues.
- Stasis: every channel's StasisStart -> StasisEnd/ChannelDestroyed in our apps, and any still
  open at the end, must stay under dialogue_timeout + 10 s (a restart allowance).
- memory: RSS (VmRSS) and open fds of the main instance's longest-lived process, sampled every
  ``sample_interval``; after a warm-up (min(120 s, a quarter)), the median RSS of the last third
  must be < 110% of the first third's, and the fd maximum may grow by 5 at most. Judged only
  when that window is at least 120 s.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from soak_load import Confirmation
from soak_observer import OriginateSample, Violation
from soak_procs import ProcSample
from soak_settings import SoakSettings

from callback_ari.errors import CorruptRecord
from callback_ari.models import Callback, State
from callback_ari.store import keys
from callback_ari.store.scripts import decode_record
from callback_ari.store.store import CallbackStore

CLOCK_SLACK_MS = 1000  # confirmation (harness clock) vs record created_ms (service clock)
LEAK_MIN_WINDOW_S = 120.0  # shorter incarnations are too short to judge a leak
LEAK_MAX_GROWTH = 0.10
FD_MAX_GROWTH = 5


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    value: str
    violations: int | None  # None: not applicable (reported, not judged)
    details: tuple[str, ...] = ()
    known_issue: str = ""  # a real, already reported bug: shown, not counted as a new failure


@dataclass(frozen=True, slots=True)
class StoreView:
    """Every record the store ever created (ids 1..seq) and what is wrong with the indexes."""

    seq: int
    records: dict[str, Callback]
    missing: tuple[str, ...]
    corrupt: tuple[str, ...]
    bad_live: tuple[str, ...]  # live records without a valid next attempt


async def read_store(client: Redis, store: CallbackStore) -> StoreView:
    """Read ids 1..seq straight from the key schema, and check the live ones' indexes."""
    seq = int(await client.get(store.key("seq")) or 0)
    records: dict[str, Callback] = {}
    missing: list[str] = []
    corrupt: list[str] = []
    ids = [str(i) for i in range(1, seq + 1)]
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for cb_id in batch:
            pipe.hgetall(store.key("cb", cb_id))
        for cb_id, fields in zip(batch, await pipe.execute(), strict=True):
            if not fields:
                missing.append(cb_id)
                continue
            try:
                records[cb_id] = decode_record(store.key("cb", cb_id), cb_id, fields)
            except CorruptRecord as exc:
                corrupt.append(f"{cb_id}: {exc}")
    bad: list[str] = []
    for cb in records.values():
        if cb.state.is_terminal:
            continue
        parts = keys.STATE_INDEXES[cb.state]
        scores = [await client.zscore(store.key("q", cb.queue, p), cb.id) for p in parts]
        indexed = any(s is not None for s in scores)
        if not indexed:
            bad.append(f"{cb.id} {cb.state.value} is in no index: it would never be dialled")
        elif cb.state is State.RETRY_WAIT and cb.next_attempt_ms <= 0:
            bad.append(f"{cb.id} retry_wait without a next attempt time")
        elif cb.state is State.DIALING and cb.lease_expires_ms <= 0:
            bad.append(f"{cb.id} dialing without a lease")
    return StoreView(seq, records, tuple(missing), tuple(corrupt), tuple(bad))


def _of(violations: Iterable[Violation], check: str) -> tuple[str, ...]:
    return tuple(v.detail for v in violations if v.check == check)


def record_rows(view: StoreView, confirmations: Sequence[Confirmation]) -> list[Row]:
    """Nothing lost: every record accounted for; every promise has a record; no phantoms."""
    states = Counter(cb.state.value for cb in view.records.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    rows = [
        Row(
            "callbacks accounted for (ids 1..seq: terminal, or live with a valid next attempt)",
            f"{len(view.records)} records ({summary or 'none'})",
            len(view.missing) + len(view.corrupt) + len(view.bad_live),
            tuple(f"id {i} missing" for i in view.missing) + view.corrupt + view.bad_live,
        )
    ]
    by_key: defaultdict[tuple[str, str], list[Callback]] = defaultdict(list)
    for cb in view.records.values():
        by_key[(cb.queue, cb.number)].append(cb)
    promised = [c for c in confirmations if c.heard in ("stored", "existing")]
    lost = [
        f"{c.queue} ...{c.number[-4:]} heard {c.heard!r} at {c.heard_t:.3f}: no record"
        for c in promised
        if not any(
            cb.created_ms <= c.heard_t * 1000 + CLOCK_SLACK_MS for cb in by_key[(c.queue, c.number)]
        )
    ]
    rows.append(
        Row(
            "promises kept (caller heard 'stored'/'already pending' -> record exists)",
            f"{len(promised)} promises of {len(confirmations)} confirmations",
            len(lost),
            tuple(lost),
        )
    )
    confirmed: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    for c in confirmations:
        confirmed[(c.queue, c.number)].append(c.t * 1000)
    phantoms = [
        f"record {cb.id} ({cb.queue} ...{cb.number[-4:]}) has no confirmation before it"
        for cb in view.records.values()
        if not any(t <= cb.created_ms + CLOCK_SLACK_MS for t in confirmed[(cb.queue, cb.number)])
    ]
    rows.append(
        Row(
            "no phantom callbacks (every record <- a caller's confirmation)",
            f"{len(view.records)} records vs {len(confirmed)} confirmed (queue, number)",
            len(phantoms),
            tuple(phantoms),
        )
    )
    return rows


def call_rows(
    violations: Sequence[Violation],
    samples: Sequence[OriginateSample],
    view: StoreView,
    settings: SoakSettings,
    stasis_max: float,
) -> list[Row]:
    """Double dials, fairness, capacity and Stasis stays."""
    rows = [
        Row(
            "one live originate per callback at a time",
            f"{len(samples)} originates",
            len(_of(violations, "double_originate")),
            _of(violations, "double_originate"),
        ),
        Row(
            "no number dialled by two callbacks at once",
            f"{len(samples)} originates",
            len(_of(violations, "number_twice")),
            _of(violations, "number_twice"),
        ),
    ]
    for label, attr in (
        ("fairness: callback join < oldest waiting caller's Queue() entry + boost", "entry"),
        ("fairness vs original join (CB_JOIN) of waiting callers + boost", "origin"),
    ):
        judged = bad = 0
        details: list[str] = []
        for s in samples:
            oldest = s.oldest_entry_ms if attr == "entry" else s.oldest_origin_ms
            cb = view.records.get(s.cb_id)
            if oldest is None or cb is None:
                continue
            judged += 1
            bound = oldest + settings.queue(s.queue).priority_boost * 1000
            if cb.join_time_ms >= bound:
                bad += 1
                details.append(
                    f"{s.queue}: callback {s.cb_id} (joined {cb.join_time_ms}) dialled by {s.app} "
                    f"at {s.t:.3f} ahead of a caller waiting since {oldest} "
                    f"({(cb.join_time_ms - oldest) / 1000:.2f} s earlier)"
                )
        rows.append(Row(label, f"{judged} originates with callers waiting", bad, tuple(details)))
    own = [s for s in samples if not s.foreign]
    cross = [s for s in samples if s.foreign]
    rows.append(
        Row(
            "in-flight callbacks <= ready members (+ members app_queue gave live callers)",
            f"peak {max((s.in_flight for s in own), default=0)} in flight, {len(own)} samples",
            len(_of(violations, "capacity")),
            _of(violations, "capacity"),
        )
    )
    rows.append(
        Row(
            "  same, with another instance's or a killed process's callbacks in flight",
            f"peak {max((s.in_flight for s in cross), default=0)} in flight, {len(cross)} samples",
            len(_of(violations, "capacity_cross")),
            _of(violations, "capacity_cross"),
            known_issue="capacity is counted per process (each instance sees only its own calls)",
        )
    )
    lastcall = _of(violations, "capacity_lastcall")
    rows.append(
        Row(
            "  same, a member in wrap-up that an AMI resync reported free up to 1 s early",
            f"{len(lastcall)} of {len(own)} samples",
            len(lastcall),
            lastcall,
            known_issue="watcher takes QueueStatus LastCall (whole seconds) as the call's end",
        )
    )
    cut = _of(violations, "cut_call")
    rows.append(
        Row(
            "service never hangs up a call that is talking to an agent",
            "every DELETE /channels by a service",
            len(cut),
            cut,  # fixed in ea8a3b0 (resync re-checks before it acts): judged again
        )
    )
    rows.append(
        Row(
            f"no channel in Stasis > dialogue_timeout + 10 s ({settings.stasis_bound_s:.0f} s)",
            f"longest stay {stasis_max:.1f} s",
            len(_of(violations, "stasis")),
            _of(violations, "stasis"),
        )
    )
    return rows


def _median(values: list[int]) -> float:
    return float(statistics.median(values)) if values else 0.0


def leak_rows(samples: Sequence[ProcSample], instance: str, load_end: float) -> list[Row]:
    """RSS and fds of the longest-lived incarnation of ``instance``, after warm-up."""
    by_pid: defaultdict[int, list[ProcSample]] = defaultdict(list)
    for s in samples:
        if s.instance == instance and s.t <= load_end:
            by_pid[s.pid].append(s)
    if not by_pid:
        return [Row("memory: RSS growth < 10% (first vs last third)", "no samples", None)]
    run = max(by_pid.values(), key=lambda xs: xs[-1].t - xs[0].t)
    span = run[-1].t - run[0].t
    warm = min(120.0, span / 4)
    kept = [s for s in run if s.t - run[0].t >= warm]
    third = max(1, len(kept) // 3)
    first, last = kept[:third], kept[-third:]
    rss0, rss1 = _median([s.rss_kb for s in first]), _median([s.rss_kb for s in last])
    fd0, fd1 = max(s.fds for s in first), max(s.fds for s in last)
    growth = (rss1 - rss0) / rss0 if rss0 else 0.0
    judged = span - warm >= LEAK_MIN_WINDOW_S
    window = (
        f"pid {run[0].pid}, {span - warm:.0f} s after {warm:.0f} s warm-up, {len(kept)} samples"
    )
    rss_text = f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MB ({growth:+.1%}); {window}"
    fd_text = f"{fd0} -> {fd1} fds, threads max {max(s.threads for s in run)}"
    if not judged:
        rss_text += f" (not judged: < {LEAK_MIN_WINDOW_S:.0f} s)"
        fd_text += " (not judged)"
    return [
        Row(
            "memory: RSS growth < 10% (median first vs last third)",
            rss_text,
            (1 if growth > LEAK_MAX_GROWTH else 0) if judged else None,
        ),
        Row(
            "open fds: last third max <= first third max + 5",
            fd_text,
            (1 if fd1 > fd0 + FD_MAX_GROWTH else 0) if judged else None,
        ),
    ]


def render(title: str, rows: Sequence[Row], *, max_details: int = 15) -> str:
    """A plain-text table (check | value | violations) and the first details of each failure."""
    width_c = max(len(r.check) for r in rows)
    width_v = max(len(r.value) for r in rows)
    line = f"+-{'-' * width_c}-+-{'-' * width_v}-+------------+"
    out = [title, line, f"| {'check':<{width_c}} | {'value':<{width_v}} | violations |", line]
    for r in rows:
        count = "n/a" if r.violations is None else str(r.violations)
        if r.known_issue and r.violations:
            count += " known"
        out.append(f"| {r.check:<{width_c}} | {r.value:<{width_v}} | {count:>10} |")
    out.append(line)
    for r in rows:
        if r.violations and r.details:
            out.append(
                f"  {r.check.strip()}:"
                + (f" [known issue: {r.known_issue}]" if r.known_issue else "")
            )
            out += [f"    - {d}" for d in r.details[:max_details]]
            if len(r.details) > max_details:
                out.append(f"    ... {len(r.details) - max_details} more")
    return "\n".join(out)


def summary_table(pairs: Sequence[tuple[str, str]]) -> str:
    """Two columns: what | how many."""
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in pairs)
