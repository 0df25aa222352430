"""``callback-ari simulate``: compare offer thresholds on a simulated call centre."""

from __future__ import annotations

import argparse
import sys

from callback_ari.sim.simqueue import SimParams
from callback_ari.sim.simulate import (
    compare_thresholds,
    format_table,
    parse_thresholds,
    plot_hold_distribution,
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
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--plot", metavar="PNG", help="also write a hold-time plot")


def run(args: argparse.Namespace) -> int:
    """Print one table row per threshold; exit 2 on bad parameters."""
    try:
        thresholds = parse_thresholds(args.thresholds)
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
        print(f"callback-ari simulate: {exc}", file=sys.stderr)
        return 2
    results = compare_thresholds(params, thresholds, args.seed)
    print(format_table(results))
    if args.plot:
        try:
            path = plot_hold_distribution(results, args.plot)
        except ImportError:
            print(
                "callback-ari simulate: --plot needs matplotlib (pip install matplotlib)",
                file=sys.stderr,
            )
            return 2
        print(f"plot written to {path}")
    return 0
