"""``callback-ari simulate``: compare offer thresholds on a simulated call centre."""

from __future__ import annotations

import argparse
import re
import sys

from callback_ari.errors import ExitCode
from callback_ari.sim.simqueue import SimParams
from callback_ari.sim.simulate import (
    compare_modes,
    format_table,
    parse_thresholds,
    plot_hold_distribution,
)

# SimParams field -> the flag that sets it, so an error names what the user typed.
FLAGS = {
    "arrivals_per_hour": "--arrivals",
    "mean_handle_s": "--handle",
    "agents": "--agents",
    "warmup_hours": "warm-up",
    "hours": "--hours",
    "wrapup_s": "--wrapup",
    "mean_patience_s": "--patience",
    "accept_probability": "--accept",
    "answer_probability": "--answer",
    "retry_interval_s": "--retry",
    "max_attempts": "--attempts",
    "threshold": "--thresholds",
}
_FIELD = re.compile(r"\b(" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")\b")


def flag_names(message: str) -> str:
    """A SimParams error in the user's words: ``mean_handle_s must be > 0`` -> ``--handle ...``."""
    message = message.replace("(or None)", "(or 0: nobody abandons)")
    return _FIELD.sub(lambda m: FLAGS[m.group(1)], message)


def offered_load(params: SimParams) -> str:
    """The load the simulated queue is offered, in the units a planner uses."""
    erlangs = params.arrivals_per_hour * (params.mean_handle_s + params.wrapup_s) / 3600
    return (
        f"offered load: {params.arrivals_per_hour:g} calls/h x "
        f"{params.mean_handle_s + params.wrapup_s:g} s (handle + wrap-up) = {erlangs:.2f} Erlang "
        f"on {params.agents} agents = {erlangs / params.agents:.0%} of their time"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arrivals", type=float, default=120.0, help="calls per hour (120)")
    parser.add_argument("--handle", type=float, default=240.0, help="mean handle time, s (240)")
    parser.add_argument("--agents", type=int, default=9, help="agents logged in (9)")
    parser.add_argument("--wrapup", type=float, default=0.0, help="wrap-up after a call, s (0)")
    parser.add_argument(
        "--patience",
        type=float,
        default=600.0,
        help="mean caller patience before abandoning, s; 0 = nobody abandons (600)",
    )
    parser.add_argument("--accept", type=float, default=0.6, help="share accepting an offer")
    parser.add_argument("--answer", type=float, default=0.8, help="share answering a callback")
    parser.add_argument("--retry", type=float, default=120.0, help="retry interval, s (120)")
    parser.add_argument("--attempts", type=int, default=3, help="max attempts (3)")
    parser.add_argument("--hours", type=float, default=8.0, help="simulated opening hours (8)")
    parser.add_argument(
        "--thresholds",
        default="none,60,120,300",
        help="comma-separated offer thresholds in seconds; 'none' = no callbacks",
    )
    parser.add_argument(
        "--modes",
        default="customer_first",
        help="comma-separated dialing modes to compare: customer_first, agent_first",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--plot", metavar="PNG", help="also write a hold-time plot")


def run(args: argparse.Namespace) -> int:
    """Print one table row per threshold; exit 2 on bad parameters."""
    try:
        thresholds = parse_thresholds(args.thresholds)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        for mode in modes:
            if mode not in ("customer_first", "agent_first"):
                raise ValueError(f"unknown dialing mode {mode!r}")
        params = SimParams(
            arrivals_per_hour=args.arrivals,
            mean_handle_s=args.handle,
            agents=args.agents,
            hours=args.hours,
            wrapup_s=args.wrapup,
            mean_patience_s=args.patience or None,
            accept_probability=args.accept,
            answer_probability=args.answer,
            retry_interval_s=args.retry,
            max_attempts=args.attempts,
        )
    except ValueError as exc:
        print(f"callback-ari simulate: {flag_names(str(exc))}", file=sys.stderr)
        return ExitCode.USAGE
    results = compare_modes(params, thresholds, args.seed, modes or ["customer_first"])
    print(offered_load(params))
    print(format_table(results))
    if args.plot:
        try:
            path = plot_hold_distribution(results, args.plot, params=params)
        except ImportError:
            print(
                "callback-ari simulate: --plot needs matplotlib (pip install matplotlib)",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        print(f"plot written to {path}")
    return ExitCode.OK
