"""``dnc add|remove|list``: a queue's do-not-call list, which abandon follow-ups respect.

Numbers are read like a caller's number (the queue's ``region``) and kept in the form the
service dials, so ``2125551234``, ``(212) 555-1234`` and ``+12125551234`` are one entry.
"""

from __future__ import annotations

import argparse
import sys

from callback_ari.cli import inspect as cli_inspect
from callback_ari.config.loader import Config
from callback_ari.core.phone import NumberPolicy, validate_number
from callback_ari.errors import NumberRejected
from callback_ari.masking import mask
from callback_ari.store.store import CallbackStore

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2


def dial_form(config: Config, queue: str, raw: str) -> str:
    """``raw`` as the queue stores numbers; raises KeyError (queue) or NumberRejected."""
    return validate_number(raw, NumberPolicy.from_queue(config.queues[queue]))


def _queue_number_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", help="queue name ([queue:NAME] in the config)")
    parser.add_argument("number", help="phone number, as a caller would give it")


def _queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", help="queue name ([queue:NAME] in the config)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser.add_argument(
        "--unmasked", action="store_true", help="show phone numbers in full (default masked)"
    )


def _number_or_exit(args: argparse.Namespace, config: Config) -> str | None:
    if args.queue not in config.queues:
        print(f"callback-ari: no [queue:{args.queue}] in the config", file=sys.stderr)
        return None
    try:
        return dial_form(config, args.queue, args.number)
    except NumberRejected as exc:
        print(f"callback-ari: not a number this queue could call: {exc.reason}", file=sys.stderr)
        return None


def add_handler(args: argparse.Namespace, config: Config) -> int:
    """``dnc add QUEUE NUMBER``: never follow up an abandoned call from NUMBER."""
    number = _number_or_exit(args, config)
    if number is None:
        return EXIT_USAGE

    async def work(store: CallbackStore) -> int:
        added = await store.dnc_add(args.queue, number)
        print(f"{'added' if added else 'already listed'}: {mask(number)} ({args.queue})")
        return EXIT_OK

    return cli_inspect.run_on_store(config, work)


def remove_handler(args: argparse.Namespace, config: Config) -> int:
    """``dnc remove QUEUE NUMBER`` (exit 1 if it was not listed)."""
    number = _number_or_exit(args, config)
    if number is None:
        return EXIT_USAGE

    async def work(store: CallbackStore) -> int:
        if not await store.dnc_remove(args.queue, number):
            print(f"callback-ari: {mask(number)} is not on {args.queue}'s list", file=sys.stderr)
            return EXIT_NOT_DONE
        print(f"removed: {mask(number)} ({args.queue})")
        return EXIT_OK

    return cli_inspect.run_on_store(config, work)


def list_handler(args: argparse.Namespace, config: Config) -> int:
    """``dnc list QUEUE``: the numbers on the list (masked unless --unmasked)."""

    async def work(store: CallbackStore) -> int:
        numbers = await store.dnc_list(args.queue)
        shown = numbers if args.unmasked else [mask(n) for n in numbers]
        if args.json:
            cli_inspect.print_json(args, {"queue": args.queue, "numbers": shown})
        else:
            for n in shown:
                print(n)
        return EXIT_OK

    return cli_inspect.run_on_store(config, work)


COMMANDS: tuple[cli_inspect.InspectCommand, ...] = (
    cli_inspect.InspectCommand("dnc add", "put a number on a queue's do-not-call list",
                               _queue_number_arguments, add_handler),
    cli_inspect.InspectCommand("dnc remove", "take a number off a queue's do-not-call list",
                               _queue_number_arguments, remove_handler),
    cli_inspect.InspectCommand("dnc list", "a queue's do-not-call list", _queue_arguments,
                               list_handler),
)  # fmt: skip
