"""The threshold simulator: agrees with queueing theory and shows what callbacks change."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from callback_ari.sim.simulate import (
    SimParams,
    compare_thresholds,
    erlang_c_wait,
    format_table,
    parse_thresholds,
    plot_hold_distribution,
    run_simulation,
)

HANDLE_S = 180.0
AGENTS = 10

# A busy queue where nobody abandons: the baseline's longest hold is well over 5 minutes.
BUSY = SimParams(
    arrivals_per_hour=125, mean_handle_s=240, agents=9, hours=8, mean_patience_s=None,
    accept_probability=1.0, answer_probability=0.8,
)  # fmt: skip


def test_erlang_c_matches_known_values() -> None:
    # M/M/1: W_q = rho / (mu - lambda)
    assert erlang_c_wait(0.5, 1.0, 1) == pytest.approx(1.0)
    # 10 agents, 9 Erlangs: P(wait) = 0.6687 -> W_q = 0.6687 * h / (c - a)
    assert erlang_c_wait(9 / 180, 180, 10) == pytest.approx(120.37, abs=0.05)
    assert erlang_c_wait(1.0, 10.0, 10) == math.inf


@pytest.mark.slow  # long simulated runs: ~6 s each
@pytest.mark.parametrize("utilisation", [0.7, 0.8, 0.9])
def test_baseline_average_wait_agrees_with_erlang_c(utilisation: float) -> None:
    rate_per_s = utilisation * AGENTS / HANDLE_S
    params = SimParams(
        arrivals_per_hour=rate_per_s * 3600, mean_handle_s=HANDLE_S, agents=AGENTS,
        hours=600, warmup_hours=5, mean_patience_s=None,
    )  # fmt: skip
    runs = [run_simulation(params, None, seed) for seed in range(1, 9)]
    simulated = sum(r.avg_answer_wait_s for r in runs) / len(runs)
    expected = erlang_c_wait(rate_per_s, HANDLE_S, AGENTS)
    assert simulated == pytest.approx(expected, rel=0.05)
    for r in runs:  # nobody abandons, nobody is offered anything
        assert r.abandoned == 0 and r.offers == 0 and r.callbacks_requested == 0
        assert r.served_live == r.callers
        assert r.avg_hold_s == pytest.approx(r.avg_answer_wait_s)


def test_callbacks_cut_the_longest_live_hold() -> None:
    results = compare_thresholds(BUSY, [60, 120, 300], seed=11)
    assert [r.label for r in results] == ["none", "60s", "120s", "300s"]
    baseline, *offered = results
    assert baseline.max_hold_s > 600
    for r in offered:
        assert r.callers == baseline.callers  # same callers in every run
        assert r.max_hold_s < baseline.max_hold_s
        assert r.threshold is not None
        assert r.max_hold_s <= r.threshold + 1e-6  # everyone accepts at the threshold
        assert r.callbacks_requested > 0
        assert r.callbacks_connected + r.callbacks_failed == r.callbacks_requested
        assert r.served_live + r.abandoned + r.callbacks_requested == r.callers
        assert r.attempts_per_connected is not None and r.attempts_per_connected >= 1.0
        assert r.request_to_callback_p90_s is not None and r.request_to_callback_p50_s is not None
        assert r.request_to_callback_p90_s >= r.request_to_callback_p50_s > 0
    # the earlier the offer, the more callers take it
    assert offered[0].callbacks_requested >= offered[1].callbacks_requested
    assert offered[1].callbacks_requested >= offered[2].callbacks_requested
    table = format_table(results)
    lines = table.splitlines()
    assert len(lines) == 2 + len(results)
    assert lines[0].split()[:4] == ["threshold", "avg", "hold", "p90"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert lines[2].startswith("none") and lines[3].startswith("60s")


def test_same_seed_same_result_and_different_seed_different_traffic() -> None:
    params = replace(BUSY, accept_probability=0.6, mean_patience_s=600)
    a = run_simulation(params, 120, seed=3)
    b = run_simulation(params, 120, seed=3)
    c = run_simulation(params, 120, seed=4)
    assert a == b
    assert a.callers != c.callers or a.live_holds_s != c.live_holds_s


def test_abandonment_is_counted_and_callbacks_reduce_it() -> None:
    params = replace(BUSY, mean_patience_s=300, accept_probability=0.9)
    baseline, early = compare_thresholds(params, [60], seed=5)
    assert baseline.abandon_rate > 0.05
    assert early.abandoned < baseline.abandoned


def test_unanswered_callbacks_use_every_attempt_then_fail() -> None:
    params = replace(BUSY, answer_probability=0.0, max_attempts=3, hours=2)
    r = run_simulation(params, 120, seed=2)
    assert r.callbacks_requested > 0
    assert r.callbacks_connected == 0
    assert r.callbacks_failed == r.callbacks_requested
    assert r.attempts == 3 * r.callbacks_requested
    assert r.attempts_per_connected is None
    assert r.agent_idle_pending_s > 0  # agents were held for the ringing attempts


def test_expired_callbacks_are_dropped() -> None:
    params = replace(BUSY, answer_probability=0.0, max_attempts=10, retry_interval_s=600,
                     max_age_s=900, hours=2)  # fmt: skip
    r = run_simulation(params, 60, seed=2)
    assert r.callbacks_expired > 0
    assert r.callbacks_failed + r.callbacks_expired == r.callbacks_requested


def test_pending_cap_stops_offers() -> None:
    capped = run_simulation(replace(BUSY, max_pending=2), 60, seed=9)
    free = run_simulation(BUSY, 60, seed=9)
    assert capped.callbacks_requested < free.callbacks_requested
    assert capped.max_hold_s > free.max_hold_s  # callers not offered hold on


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="agents"):
        SimParams(arrivals_per_hour=10, mean_handle_s=60, agents=0)
    with pytest.raises(ValueError, match="accept_probability"):
        SimParams(arrivals_per_hour=10, mean_handle_s=60, agents=1, accept_probability=2)


def test_parse_thresholds() -> None:
    assert parse_thresholds("none, 60,120s,300") == [None, 60, 120, 300]
    with pytest.raises(ValueError, match="not a number"):
        parse_thresholds("soon")
    with pytest.raises(ValueError, match="> 0"):
        parse_thresholds("0")


@pytest.mark.slow  # matplotlib
def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = compare_thresholds(replace(BUSY, hours=2), [60, 300], seed=1)
    out = plot_hold_distribution(results, tmp_path / "holds.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_dialing_modes_trade_the_customers_wait_for_agent_time() -> None:
    """customer_first: the customer waits through "press 1" and the queue's ring; agent_first:
    only through the "press 1" (the agent is on the line), but every attempt holds an agent
    through the whisper, the ring and the "press 1"."""
    first = run_simulation(BUSY, 60, seed=3)
    agent = run_simulation(replace(BUSY, dialing_mode="agent_first"), 60, seed=3)
    assert first.wait_after_answer_p50_s == pytest.approx(BUSY.confirm_s + BUSY.queue_connect_s)
    assert agent.wait_after_answer_p90_s == pytest.approx(BUSY.confirm_s)
    assert first.agent_held_per_connected_s is not None
    assert agent.agent_held_per_connected_s is not None
    assert agent.agent_held_per_connected_s > first.agent_held_per_connected_s
    lines = format_table([first, agent]).splitlines()
    assert lines[0].split()[-6:] == ["mode", "ans->agent", "p50", "ans->agent", "p90", "held/conn"]
    assert "agent_first" in lines[3]
    with pytest.raises(ValueError, match="dialing_mode"):
        replace(BUSY, dialing_mode="preview")


def test_cli_errors_name_the_flags_and_the_offered_load_is_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from callback_ari.cli.app import main

    assert main(["simulate", "--arrivals", "0", "--handle", "-5", "--accept", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--arrivals must be > 0" in err and "--handle must be > 0" in err
    assert "--accept must be within [0, 1]" in err
    assert "arrivals_per_hour" not in err and "mean_handle_s" not in err

    assert main(["simulate", "--hours", "1", "--thresholds", "none,60"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "offered load: 120 calls/h x 240 s (handle + wrap-up) = 8.00 Erlang on 9 agents"
        " = 89% of their time"
    )


@pytest.mark.slow  # matplotlib
def test_plot_has_a_title_the_parameters_and_a_cost_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from callback_ari.sim.simulate import plot_title

    params = SimParams(arrivals_per_hour=120, mean_handle_s=240, agents=9, hours=1)
    results = compare_thresholds(params, [None, 60], seed=1)
    out = plot_hold_distribution(results, tmp_path / "holds.png", params=params)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    title, line = plot_title(params)
    assert "hold time by offer threshold" in title
    assert "120 calls/h" in line and "9 agents (89% load)" in line and "accept 60%" in line

    import matplotlib.pyplot as plt

    captured = {}
    real_close = plt.close

    def keep(fig: object) -> None:
        captured["fig"] = fig
        real_close(fig)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt, "close", keep)
        plot_hold_distribution(results, tmp_path / "again.png", params=params)
    fig = captured["fig"]
    axes = fig.get_axes()  # type: ignore[attr-defined]
    titles = [ax.get_title() for ax in axes]
    assert "the cost: agent time and abandonment" in titles
    assert fig._suptitle.get_text().startswith(title)  # type: ignore[attr-defined]
    cost = next(ax for ax in axes if ax.get_title().startswith("the cost"))
    assert len(cost.patches) == 2  # one idle-time bar per threshold
