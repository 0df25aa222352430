"""The ``callback-ari`` command line: global options and a registry of subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callback_ari import __version__
from callback_ari.cli import commands
from callback_ari.config.loader import DEFAULT_PATH, load_config, refuse_placeholders
from callback_ari.errors import ConfigError, ExitCode
from callback_ari.logs import LEVELS, configure_logging
from callback_ari.ops.kit import sample_config, write_kit

AddArguments = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: ``name`` may be nested ("config check")."""

    name: str
    help: str
    add_arguments: AddArguments
    handler: Handler


COMMANDS: dict[str, Command] = {}
GROUPS: dict[str, str] = {
    "config": "inspect the configuration file",
    "dnc": "a queue's do-not-call list (no abandon follow-ups)",
}


def register(name: str, help: str, add_arguments: AddArguments, handler: Handler) -> None:
    """Add a subcommand; ``handler(args)`` returns the exit status."""
    if name in COMMANDS:
        raise ValueError(f"command {name!r} registered twice")
    COMMANDS[name] = Command(name, help, add_arguments, handler)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="callback-ari", description="Virtual-hold callbacks for Asterisk queues."
    )
    parser.add_argument("--version", action="version", version=f"callback-ari {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        default=DEFAULT_PATH,
        metavar="PATH",
        help=f"config file (default {DEFAULT_PATH})",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console", "journal"),
        default=None,
        help="log output: JSON lines, coloured console, journal (JSON lines with a syslog "
        "<priority> prefix), or auto (console on a TTY; journal when stdout is journald)",
    )
    parser.add_argument("--log-level", choices=LEVELS, default=None, help="minimum log level")
    # -c may also follow the subcommand (`callback-ari config check -c PATH`); SUPPRESS keeps
    # the global default unless it is given there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"config file (default {DEFAULT_PATH})")  # fmt: skip
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        *parents, leaf = command.name.split()
        subparsers = root
        path = ""
        for part in parents:
            path = f"{path} {part}".strip()
            if path not in groups:
                group = subparsers.add_parser(part, help=GROUPS.get(path, ""))
                groups[path] = group.add_subparsers(dest=f"{path}_command", metavar="COMMAND")
                group.set_defaults(_group=group)
            subparsers = groups[path]
        sub = subparsers.add_parser(
            leaf, help=command.help, description=command.help, parents=[common]
        )
        command.add_arguments(sub)
        sub.set_defaults(_handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return (
            exc.code
            if isinstance(exc.code, int)
            else ExitCode.OK
            if exc.code is None
            else ExitCode.USAGE
        )
    handler: Handler | None = getattr(args, "_handler", None)
    if handler is None:
        group: argparse.ArgumentParser = getattr(args, "_group", parser)
        group.print_help(sys.stderr)
        return ExitCode.USAGE
    configure_logging(args.log_format or "auto", args.log_level or "info")
    return handler(args)


# --- config check ------------------------------------------------------------------


def _config_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the config as JSON")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the config is good"
    )


def _config_check(args: argparse.Namespace) -> int:
    """Load the config; print it (secrets masked) or every problem, one per line."""
    try:
        config = load_config(args.config)
        refuse_placeholders(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.USAGE
    shown = config.redacted()
    if args.quiet:
        return ExitCode.OK
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        print(f"; effective configuration from {args.config} (secrets shown as ***)")
        print(render_ini(shown), end="")
    return ExitCode.OK


def render_ini(sections: dict[str, dict[str, Any]]) -> str:
    """Format ``{section: {key: value}}`` as Asterisk-style INI."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_ini_value(value)}" for key, value in values.items())
    return "\n".join(lines).lstrip("\n") + "\n"


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _config_sample(args: argparse.Namespace) -> int:
    """Print the fully commented example config."""
    del args
    sys.stdout.write(sample_config())
    return ExitCode.OK


def _kit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="folder to write the kit into")
    parser.add_argument(
        "--force", action="store_true", help="overwrite files that differ (default: write .dist)"
    )


def _kit(args: argparse.Namespace) -> int:
    """Write the dialplan kit files; never replace an edited file without --force."""
    try:
        done = write_kit(Path(args.path), force=args.force)
    except OSError as exc:
        print(f"callback-ari: cannot write the kit to {args.path}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    for item in done:
        if item.action == "dist":
            print(f"{item.path}  (kept your {item.path.with_suffix('')}: it differs)")
        else:
            print(f"{item.path}  {item.action}")
    return ExitCode.OK


register(
    "config check",
    "validate the config file and print the effective settings (exit 2 on problems)",
    _config_check_arguments,
    _config_check,
)

register(
    "config sample",
    "print the example config: callback-ari config sample > /etc/asterisk/callback_ari.conf",
    lambda parser: None,
    _config_sample,
)
register(
    "kit",
    "write the dialplan kit (ari.conf, manager.conf, extensions_callback.conf, ...) to PATH",
    _kit_arguments,
    _kit,
)
commands.register_all(register)
