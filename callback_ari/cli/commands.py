"""The operational subcommands: ``run``, ``check``, ``demo``, ``simulate`` and the inspectors.

Each handler takes the parsed arguments and returns the process exit status, an
``errors.ExitCode``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from callback_ari.cli import dnc as cli_dnc
from callback_ari.cli import inspect as cli_inspect
from callback_ari.config.loader import Config, load_config, refuse_placeholders
from callback_ari.config.schema import redact_url
from callback_ari.errors import ApplicationReplaced, ConfigError, ExitCode, StoreUnavailable
from callback_ari.logs import configure_logging
from callback_ari.masking import set_masking

if TYPE_CHECKING:
    from callback_ari.service.service import Service

log = structlog.get_logger(__name__)


def load_or_report(args: argparse.Namespace) -> Config | None:
    """The config, or None after printing every problem (one per line) on stderr."""
    try:
        config = load_config(args.config)
        refuse_placeholders(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    configure_logging(
        args.log_format or config.general.log_format,
        args.log_level or config.general.log_level,
        mask_numbers=config.general.mask_numbers,
    )
    set_masking(config.general.mask_numbers)
    return config


def run_until_signal(main: asyncio.Future[None] | asyncio.Task[None]) -> None:
    """Cancel ``main`` on SIGTERM/SIGINT so every component cleans up in its finally."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, main.cancel)


# --- run -----------------------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options of its own: everything is in the config file


def run_handler(args: argparse.Namespace) -> int:
    """Run the service in the foreground until SIGTERM/SIGINT."""
    config = load_or_report(args)
    if config is None:
        return ExitCode.USAGE
    # heavy imports only for commands that need them
    from callback_ari.ops.web import http_front_end
    from callback_ari.service.service import Service

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        run_until_signal(task)
        service = Service(config, front_ends=[http_front_end])
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, reload_config, service, args
            )
        await service.run()

    status = ExitCode.OK
    try:
        asyncio.run(main())
    except* StoreUnavailable as group:
        print(
            f"callback-ari: cannot reach Redis at {redact_url(config.redis.url)}: "
            f"{group.exceptions[0]}",
            file=sys.stderr,
        )
        status = ExitCode.REDIS
    except* ApplicationReplaced:
        print(
            f"callback-ari: another program took the Stasis app {config.general.app!r}; "
            "stop it or set [general] app to a different name",
            file=sys.stderr,
        )
        status = ExitCode.ASTERISK
    except* (KeyboardInterrupt, asyncio.CancelledError):
        pass
    log.info("service.stopped", exit_status=int(status))
    return status


def reload_config(service: Service, args: argparse.Namespace) -> None:
    """SIGHUP: re-read the config file; a bad file is logged and the running settings stay."""
    try:
        wanted = load_config(args.config)
        refuse_placeholders(wanted)
    except ConfigError as exc:
        log.error("config.reload_failed", problems=[str(p) for p in exc.problems])
        return
    general = service.reload(wanted).config.general
    configure_logging(
        args.log_format or general.log_format,
        args.log_level or general.log_level,
        mask_numbers=general.mask_numbers,
    )


# --- check ---------------------------------------------------------------------------


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="machine-readable JSON instead of the table"
    )


def check_handler(args: argparse.Namespace) -> int:
    """Doctor a live installation: ARI, AMI, queues, dialplan, prompts, Redis."""
    config = load_or_report(args)
    if config is None:
        return ExitCode.USAGE
    from callback_ari.ops.doctor import Status, findings_json, format_findings, run_checks

    findings = asyncio.run(run_checks(config))
    print(findings_json(findings) if args.json else format_findings(findings))
    return ExitCode.FAILED if any(f.status is Status.FAIL for f in findings) else ExitCode.OK


# --- simulate ------------------------------------------------------------------------


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    from callback_ari.cli.simulate import add_arguments

    add_arguments(parser)


def simulate_handler(args: argparse.Namespace) -> int:
    from callback_ari.cli.simulate import run

    return run(args)


# --- demo ----------------------------------------------------------------------------


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed", type=float, default=10.0, help="how much faster than real time (default 10)"
    )
    parser.add_argument("--seed", type=int, default=7, help="scenario seed")
    parser.add_argument(
        "--asterisk", action="store_true",
        help="play it with real channels on the sandbox Asterisk 22 (dialplan/sandbox/pbx)",
    )  # fmt: skip


def demo_handler(args: argparse.Namespace) -> int:
    """Run the whole flow on the simulated PBX with a private redis-server."""
    from callback_ari.sim.demo import run_demo

    configure_logging(args.log_format or "auto", args.log_level or "info")
    return run_demo(speed=args.speed, seed=args.seed, asterisk=args.asterisk)


class Register(Protocol):
    """The CLI registry's ``register``: adds one subcommand."""

    def __call__(
        self,
        name: str,
        help: str,
        add_arguments: Callable[[argparse.ArgumentParser], None],
        handler: Callable[[argparse.Namespace], int],
    ) -> None: ...


def register_all(register: Register) -> None:
    """Add these commands to the CLI registry through its ``register``."""
    register("run", "run the service in the foreground", _run_arguments, run_handler)
    register(
        "check", "doctor a live installation (exit 1 on failure)", _check_arguments, check_handler
    )
    register("demo", "run the whole flow on a simulated PBX", _demo_arguments, demo_handler)
    register(
        "simulate",
        "compare offer thresholds on a simulated call centre",
        _simulate_arguments,
        simulate_handler,
    )
    for command in (*cli_inspect.COMMANDS, *cli_dnc.COMMANDS):
        register(
            command.name,
            command.help,
            command.add_arguments,
            cli_inspect.with_config(command.handler),
        )
