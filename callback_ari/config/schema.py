"""The config file's grammar (Asterisk-style INI) and the type and range of every key."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import phonenumbers

from callback_ari.core import phone
from callback_ari.core.hours import zone
from callback_ari.core.reasons import parse_reasons

Converter = Callable[[str], object]

QUEUE_PREFIX = "queue:"
ENV_PREFIX = "CALLBACK_ARI_"
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
    return Numeric(int, "a whole number", lo, hi)


def number(lo: float | None = None, hi: float | None = None) -> Converter:
    return Numeric(float, "a number", lo, hi)


@dataclass(frozen=True, slots=True)
class Numeric:
    """A number within an optional range; ``values`` documents the range."""

    kind: type[float]
    what: str
    lo: float | None
    hi: float | None

    def __call__(self, raw: str) -> float:
        try:
            value = self.kind(raw.strip())
        except ValueError:
            raise ValueError(f"must be {self.what}") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if self.lo is not None and value < self.lo:
            raise ValueError(f"must be >= {self.lo:g}")
        if self.hi is not None and value > self.hi:
            raise ValueError(f"must be <= {self.hi:g}")
        return value

    @property
    def values(self) -> str:
        lo, hi = _plain_number(self.lo), _plain_number(self.hi)
        if not lo:
            return f"<= {hi}" if hi else ""
        return f"{lo}-{hi}" if hi else f">= {lo}"


def _plain_number(value: float | None) -> str:
    """2592000, not 2.592e+06; 0.5 stays 0.5."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a few words (lower-cased)."""

    options: tuple[str, ...]

    def __call__(self, raw: str) -> str:
        value = raw.strip().lower()
        if value not in self.options:
            raise ValueError("must be one of " + ", ".join(self.options))
        return value

    @property
    def values(self) -> str:
        return ", ".join(self.options)


def values_of(convert: Converter) -> str:
    """The accepted values of a converter as documented ("5-3600", "yes/no", ""), if it says."""
    if convert is boolean:
        return "yes/no"
    return str(getattr(convert, "values", ""))


def choice(*options: str) -> Converter:
    return Choice(options)


def dialing_mode(raw: str) -> str:
    """customer_first (ring the customer, then the queue) or agent_first (ring a member)."""
    value = raw.strip().lower()
    if value not in ("customer_first", "agent_first"):
        raise ValueError("must be one of customer_first, agent_first")
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


def reasons(raw: str) -> tuple[str, ...]:
    """``1:billing, 2:technical=sound:custom/tech``: checked whole (digits and names once)."""
    entries = tuple(p.strip() for p in raw.split(",") if p.strip())
    parse_reasons(entries)
    return entries


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


# --- shared converters of the declarations in ``settings`` ----------------------------

IDENT = r"[A-Za-z0-9_.-]+"
HOST = r"[A-Za-z0-9_.:\[\]-]+"
PORT = integer(0, 65535)
CONTEXT = name(r"[A-Za-z0-9_.-]+", "a dialplan context name")
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,80}")
MEDIA_LIST = str_list(_media)  # a prompt: sound:, recording:, digits:, number:, tone: URIs
