"""The config file's grammar (Asterisk-style INI) and the type and range of every key."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

import phonenumbers

from callback_ari.core import phone
from callback_ari.core.hours import zone

Converter = Callable[[str], object]

FIXED_SECTIONS = ("general", "ari", "ami", "redis", "http", "agi")
QUEUE_PREFIX = "queue:"
ENV_PREFIX = "CALLBACK_ARI_"
SECRETS = frozenset({("ari", "password"), ("ami", "secret"), ("http", "token")})
REQUIRED = (("ari", "password"), ("ami", "secret"))
PROMPT_NAMES = (
    "offer", "confirm_callerid", "enter_number", "readback_intro", "confirm_number", "invalid",
    "too_many_tries", "already_pending", "stored", "wait_estimate", "returning_to_queue",
    "sorry_error", "callback_intro", "callback_press1", "callback_connecting", "goodbye",
)  # fmt: skip
MASK = "***"


def env_name(section: str, key: str) -> str:
    """The environment variable overriding ``key`` of ``section``.

    ``[queue:support-eu] max_attempts`` -> CALLBACK_ARI_QUEUE_SUPPORT_EU_MAX_ATTEMPTS.
    """
    return ENV_PREFIX + env_tag(section) + "_" + key.upper()


def env_tag(section: str) -> str:
    """Section part of an env name: upper case, every non-alphanumeric becomes '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", section).upper()


# --- value converters (raise ValueError with the problem's message) ----------------

_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})


def boolean(raw: str) -> bool:
    """Asterisk's ast_true/ast_false words: yes/no, true/false, on/off, 1/0."""
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be yes or no")


def integer(lo: int | None = None, hi: int | None = None) -> Converter:
    return _numeric(int, "a whole number", lo, hi)


def number(lo: float | None = None, hi: float | None = None) -> Converter:
    return _numeric(float, "a number", lo, hi)


def _numeric(kind: type[float], what: str, lo: float | None, hi: float | None) -> Converter:
    def convert(raw: str) -> float:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"must be {what}") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo:g}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi:g}")
        return value

    return convert


def choice(*options: str) -> Converter:
    def convert(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return value

    return convert


def dialing_mode(raw: str) -> str:
    """Only customer-first dialling exists; agent-first (preview) is refused, not ignored."""
    value = raw.strip().lower()
    if value not in ("customer_first", "agent_first"):
        raise ValueError("must be one of customer_first, agent_first")
    if value == "agent_first":
        raise ValueError("agent_first (preview dialling) is not available in this release")
    return value


def name(pattern: str, what: str, *, empty_ok: bool = False) -> Converter:
    """Free text restricted to ``pattern`` (identifiers, hosts, contexts)."""
    rx = re.compile(pattern)

    def convert(raw: str) -> str:
        value = raw.strip()
        if not value and empty_ok:
            return value
        if not value:
            raise ValueError("must not be empty")
        if not rx.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return convert


def secret(raw: str) -> str:
    if any(ord(c) < 32 for c in raw):
        raise ValueError("must not contain control characters")
    return raw


def caller_id(raw: str) -> str:
    value = raw.strip()
    if len(value) > 80 or any(ord(c) < 32 for c in value):
        raise ValueError('must be like "Support" <2025550100> (at most 80 characters)')
    return value


def str_list(item: Converter | None = None) -> Converter:
    """Comma or whitespace separated list; each item checked by ``item``."""

    def convert(raw: str) -> tuple[str, ...]:
        parts = tuple(p for p in re.split(r"[\s,]+", raw.strip()) if p)
        if item is not None:
            for part in parts:
                item(part)
        return parts

    return convert


_MEDIA = re.compile(
    r"(sound|recording):[A-Za-z0-9_][A-Za-z0-9_./-]*|digits:[0-9*#]+|number:-?[0-9]+"
    r"|tone:[A-Za-z0-9_/*+.|@!-]+"
)


def _media(raw: str) -> None:
    if not _MEDIA.fullmatch(raw) or ".." in raw:
        raise ValueError(
            f"bad media URI {raw!r}: use sound:NAME, recording:NAME, digits:N, number:N or tone:T"
        )


def dial_template(raw: str) -> str:
    value = raw.strip()
    phone.check_dial_template(value)
    return value


def timezone(raw: str) -> str:
    value = raw.strip()
    zone(value)
    return value


def region(raw: str) -> str:
    value = raw.strip().upper()
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code like US, GB, DE")
    return value


def http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL like http://127.0.0.1:8088")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (use username and password)")
    if parts.path.rstrip("/").endswith("/ari"):
        raise ValueError("must be the HTTP base without /ari (the client adds /ari)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    _port(parts)
    return value


def redis_url(raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
    _port(parts)
    return value


def _port(parts: SplitResult) -> None:
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None


def host_port(raw: str) -> None:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad sentinel {raw!r}: use host:port")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


# --- the schema ----------------------------------------------------------------------

_IDENT = r"[A-Za-z0-9_.-]+"
_HOST = r"[A-Za-z0-9_.:\[\]-]+"
PORT = integer(0, 65535)

SCHEMA: dict[str, dict[str, Converter]] = {
    "general": {
        "app": name(_IDENT, "letters, digits, '_', '.' or '-'"),
        "instance_id": name(_IDENT, "letters, digits, '_', '.' or '-'"),
        "mask_numbers": boolean,
        "log_level": choice("debug", "info", "warning", "error", "critical"),
        "log_format": choice("auto", "json", "console", "journal"),
        "lease_seconds": integer(5, 3600),
        "resync_interval": integer(1, 3600),
        "dialogue_timeout": integer(10, 3600),
    },
    "ari": {
        "url": http_url,
        "username": name(r"[^\s:]+", "a user name without spaces or ':'"),
        "password": secret,
        "verify_tls": boolean,
    },
    "ami": {
        "host": name(_HOST, "a host name or IP address"),
        "port": integer(1, 65535),
        "username": name(r"[^\s]+", "a user name without spaces"),
        "secret": secret,
        "ping_interval": number(0.5, 3600),
        "ping_timeout": number(0.5, 600),
        "tls": boolean,
    },
    "redis": {
        "url": redis_url,
        "prefix": name(r"[A-Za-z0-9_.:-]+", "letters, digits, '_', '.', ':' or '-'"),
        "audit_maxlen": integer(0),
        "sentinel_master": name(_IDENT, "a Sentinel master name", empty_ok=True),
        "sentinels": str_list(host_port),
        "min_replicas": integer(0, 16),
        "min_replicas_timeout": number(0.05, 60),
    },
    "http": {
        "enabled": boolean,
        "bind": name(_HOST, "a host name or IP address"),
        "port": PORT,
        "token": secret,
    },
    "agi": {
        "enabled": boolean,
        "bind": name(_HOST, "a host name or IP address"),
        "port": PORT,
    },
}

_CONTEXT = name(r"[A-Za-z0-9_.-]+", "a dialplan context name")

QUEUE_SCHEMA: dict[str, Converter] = {
    "enabled": boolean,
    "offer_threshold": integer(0, 86400),
    "offer_on_estimated_wait": integer(0, 86400),
    "withdraw": boolean,
    "request_digit": name(r"[0-9*#]", "one DTMF digit (0-9, * or #)"),
    "dial_template": dial_template,
    "caller_id": caller_id,
    "ring_timeout": integer(5, 600),
    "confirm_timeout": integer(1, 120),
    "max_attempts": integer(1, 100),
    "retry_interval": integer(1, 86400),
    "first_attempt_grace": integer(0, 3600),
    "max_age": integer(60, 30 * 86400),
    "max_pending": integer(1, 1_000_000),
    "hours": str.strip,  # checked together with the queue's timezone
    "timezone": timezone,
    "after_hours": choice("carry_over", "expire"),
    "region": region,
    "language": name(
        r"[A-Za-z0-9_]+", "an Asterisk language code like en, es, fr_FR", empty_ok=True
    ),
    "allow_international": boolean,
    "allow_patterns": str_list(phone.check_pattern),
    "deny_patterns": str_list(phone.check_pattern),
    "max_tries": integer(1, 10),
    "digit_timeout": integer(1, 60),
    "response_timeout": integer(1, 120),
    "connect_context": _CONTEXT,
    "return_context": _CONTEXT,
    "queue_priority": integer(0, 2_147_483_647),
    "wrapup_time": integer(0, 3600),
    "priority_boost": integer(0, 86400),
    "on_recall": choice("cancel", "keep"),
    "dialing_mode": dialing_mode,
    "announce_wait": boolean,
}
for _prompt in PROMPT_NAMES:
    QUEUE_SCHEMA["prompt_" + _prompt] = str_list(_media)

# Keys that may be repeated in a section; their values are joined into one list.
LIST_KEYS = frozenset(
    {"sentinels", "allow_patterns", "deny_patterns"} | {"prompt_" + p for p in PROMPT_NAMES}
)

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,80}")


def schema_for(section: str) -> dict[str, Converter] | None:
    """The keys of a normalised section name, or None if the section is unknown."""
    if section.startswith(QUEUE_PREFIX):
        return QUEUE_SCHEMA
    return SCHEMA.get(section)
