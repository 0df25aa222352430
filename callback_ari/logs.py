"""Logging: structlog configured once, JSON lines or console, numbers masked, secrets redacted.

On journald (``JOURNAL_STREAM`` names stdout, or ``--log-format journal``) each line starts
with its syslog priority (``<3>`` for errors), which journald strips and stores as PRIORITY,
so ``journalctl -p err`` finds the errors; the JSON after the prefix is unchanged.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from callback_ari import masking

NUMBER_KEYS = frozenset({"number", "caller_number", "callerid", "phone", "to", "from"})
SECRET_KEYS = frozenset({"password", "secret", "token", "api_key", "authorization"})
REDACTED = "***"
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("auto", "json", "console", "journal")
# sd-daemon(3) priorities: journald reads a leading "<N>" as the line's PRIORITY.
SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@"
)

_stdlib_handler: logging.Handler | None = None


def mask_number_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Mask phone numbers under well-known keys (no-op while masking is switched off)."""
    for key, value in event_dict.items():
        if key.lower() in NUMBER_KEYS and value is not None:
            event_dict[key] = masking.mask(str(value))
    return event_dict


def redact_secret_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Replace secrets (by key name, also one level down in dicts) and URL passwords with ***."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact(key, value)
    return event_dict


def _redact(key: str, value: Any) -> Any:
    if key.lower() in SECRET_KEYS:
        return REDACTED
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", value)
    if isinstance(value, Mapping):
        return {k: _redact(str(k), v) for k, v in value.items()}
    return value


class _Stdout(io.TextIOBase):
    """Whatever sys.stdout is at write time (it may be swapped, e.g. by test capture)."""

    def write(self, s: str) -> int:
        return sys.stdout.write(s)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()


class JournalRenderer:
    """JSON lines prefixed with the syslog priority of their level (``<3>{"event": ...}``)."""

    def __init__(self) -> None:
        self._json = structlog.processors.JSONRenderer()

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", name)).lower()
        priority = SYSLOG_PRIORITY.get(level, SYSLOG_PRIORITY["info"])
        body = self._json(logger, name, event_dict)
        text = body.decode() if isinstance(body, bytes) else body
        return f"<{priority}>{text}"


def stdout_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` is set and (where it can be checked) names ``stream``.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a unit whose stdout is the journal;
    a child whose stdout was redirected elsewhere inherits the variable, hence the check.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return True  # a wrapped stream (test capture): trust the variable
    dev, _, ino = value.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def _renderer(fmt: str, stream: TextIO) -> Processor:
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    if fmt == "journal" or stdout_is_journal(stream):
        return JournalRenderer()
    return structlog.processors.JSONRenderer()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    fmt: str = "auto", level: str = "info", mask_numbers: bool = True, stream: TextIO | None = None
) -> None:
    """Configure structlog (and stdlib logging at WARNING+) to write to ``stream`` (stdout).

    ``fmt``: "json" for JSON lines, "console" for coloured human output, "journal" for JSON
    lines with a syslog priority prefix, "auto" picks console on a TTY and JSON otherwise.
    JSON gets the prefix whenever stdout is the journal. Calling it again replaces the
    previous configuration.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    out = cast(TextIO, _Stdout()) if stream is None else stream
    masking.set_masking(mask_numbers)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer = _renderer(fmt, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[Processor] = [mask_number_fields, redact_secret_fields]
    if not isinstance(renderer, structlog.dev.ConsoleRenderer):
        finish.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *finish,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        context_class=dict,
        # not cached: a later configure_logging() (tests, `run` after `check`) must take effect
        cache_logger_on_first_use=False,
    )
    _route_stdlib(shared, finish, renderer, out, max(numeric, logging.WARNING))


def _route_stdlib(
    shared: list[Processor],
    finish: list[Processor],
    renderer: Processor,
    stream: TextIO,
    level: int,
) -> None:
    """Send stdlib records (aiohttp, redis, asyncio) through the same renderer."""
    global _stdlib_handler
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *finish,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _stdlib_handler = handler


def reset_logging() -> None:
    """Undo configure_logging(): structlog defaults, our stdlib handler removed, masking on."""
    global _stdlib_handler
    structlog.reset_defaults()
    if _stdlib_handler is not None:
        logging.getLogger().removeHandler(_stdlib_handler)
        _stdlib_handler = None
    masking.set_masking(True)
