"""The service's configuration: one Asterisk-style file plus env overrides, read once, frozen."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from callback_ari.config.ini import Entry, read_ini, read_ini_file
from callback_ari.config.schema import (
    ENV_PREFIX,
    FIXED_SECTIONS,
    LIST_KEYS,
    MASK,
    QUEUE_NAME,
    QUEUE_PREFIX,
    QUEUE_SCHEMA,
    REQUIRED,
    SCHEMA,
    SECRETS,
    env_name,
    redact_url,
    schema_for,
)
from callback_ari.core.hours import BusinessHours
from callback_ari.core.prompts import language_defaults
from callback_ari.errors import ConfigError, ConfigProblem

DEFAULT_PATH = "/etc/asterisk/callback_ari.conf"


@dataclass(frozen=True, slots=True)
class GeneralConfig:
    app: str = "callback-ari"
    instance_id: str = field(default_factory=socket.gethostname)
    mask_numbers: bool = True
    log_level: str = "info"
    log_format: str = "auto"
    lease_seconds: int = 60
    resync_interval: int = 30
    dialogue_timeout: int = 180


@dataclass(frozen=True, slots=True)
class AriConfig:
    url: str = "http://127.0.0.1:8088"  # HTTP base without /ari; the client appends /ari
    username: str = "callback-ari"
    password: str = field(default="", repr=False)
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callback-ari"
    secret: str = field(default="", repr=False)
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    tls: bool = False


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    prefix: str = "cbari"
    audit_maxlen: int = 100000
    sentinel_master: str = ""
    sentinels: tuple[str, ...] = ()
    min_replicas: int = 0  # a new callback is promised only once this many replicas hold it
    min_replicas_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 8090
    token: str = field(default="", repr=False)  # the HTTP API is off while this is empty


@dataclass(frozen=True, slots=True)
class AgiConfig:
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 4573


@dataclass(frozen=True, slots=True)
class Prompts:
    """Media URIs for each step of the dialogues (stock asterisk-core-sounds-en by default).

    The offer defaults equal prompts.DEFAULT_PROMPTS; an empty tuple plays nothing.
    """

    offer: tuple[str, ...] = ("sound:queue-thankyou", "sound:vm-press", "sound:digits/1")
    confirm_callerid: tuple[str, ...] = ("sound:vm-num-i-have",)
    enter_number: tuple[str, ...] = ("sound:privacy-prompt", "sound:vm-then-pound")
    readback_intro: tuple[str, ...] = ("sound:you-entered",)
    confirm_number: tuple[str, ...] = (
        "sound:if-correct-press",
        "sound:digits/1",
        "sound:vm-calldiffnum",
    )
    invalid: tuple[str, ...] = ("sound:privacy-incorrect",)
    too_many_tries: tuple[str, ...] = ("sound:vm-sorry",)
    already_pending: tuple[str, ...] = ("sound:auth-thankyou",)
    stored: tuple[str, ...] = ("sound:num-was-successfully", "sound:added")
    wait_estimate: tuple[str, ...] = ("sound:queue-holdtime", "sound:queue-minutes")
    returning_to_queue: tuple[str, ...] = ("sound:queue-thankyou",)
    sorry_error: tuple[str, ...] = ("sound:sorry",)
    callback_intro: tuple[str, ...] = ("sound:queue-thankyou",)
    callback_press1: tuple[str, ...] = ("sound:vm-press", "sound:digits/1")
    callback_connecting: tuple[str, ...] = ("sound:queue-youarenext",)
    goodbye: tuple[str, ...] = ("sound:vm-goodbye",)

    def as_mapping(self) -> Mapping[str, tuple[str, ...]]:
        """``{prompt name: media URIs}`` for every prompt."""
        return MappingProxyType({f.name: getattr(self, f.name) for f in fields(self)})

    def all_uris(self) -> tuple[str, ...]:
        """Every media URI used by any prompt, once each, in declaration order."""
        return tuple(dict.fromkeys(uri for uris in self.as_mapping().values() for uri in uris))


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Callback settings of one Asterisk queue (section ``[queue:NAME]``)."""

    name: str
    enabled: bool = True
    offer_threshold: int = 120
    offer_on_estimated_wait: int = 0
    withdraw: bool = True
    request_digit: str = "1"
    dial_template: str = "PJSIP/{number}@trunk"
    caller_id: str = ""
    ring_timeout: int = 30
    confirm_timeout: int = 10
    max_attempts: int = 3
    retry_interval: int = 120
    first_attempt_grace: int = 5  # seconds after the caller's own call hung up
    max_age: int = 14400
    max_pending: int = 200
    hours: str = ""
    timezone: str = "UTC"
    after_hours: str = "carry_over"
    region: str = "US"
    language: str = ""  # empty: the channel's own language (CHANNEL(language))
    allow_international: bool = False
    allow_patterns: tuple[str, ...] = ()
    deny_patterns: tuple[str, ...] = ()
    max_tries: int = 3
    digit_timeout: int = 5
    response_timeout: int = 8
    connect_context: str = "callback-connect"
    return_context: str = "callback-return"
    queue_priority: int = 10
    wrapup_time: int = 0  # must equal queues.conf wrapuptime: Asterisk does not report it
    priority_boost: int = 0
    on_recall: str = "cancel"
    dialing_mode: str = "customer_first"
    announce_wait: bool = True
    prompts: Prompts = field(default_factory=Prompts)


def _no_queues() -> Mapping[str, QueueConfig]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the service reads from its config file, validated."""

    general: GeneralConfig = field(default_factory=GeneralConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    ami: AmiConfig = field(default_factory=AmiConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    queues: Mapping[str, QueueConfig] = field(default_factory=_no_queues)

    def __post_init__(self) -> None:
        if not isinstance(self.queues, MappingProxyType):
            object.__setattr__(self, "queues", MappingProxyType(dict(self.queues)))

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The effective configuration as ``{section: {key: value}}`` with secrets as ***."""
        out: dict[str, dict[str, Any]] = {}
        for section in FIXED_SECTIONS:
            values = getattr(self, section)
            shown: dict[str, Any] = {}
            for f in fields(values):
                shown[f.name] = _shown(section, f.name, getattr(values, f.name))
            out[section] = shown
        for name, q in self.queues.items():
            shown = {f.name: _plain(getattr(q, f.name)) for f in fields(q)}
            del shown["name"], shown["prompts"]
            for p in fields(q.prompts):
                shown["prompt_" + p.name] = _plain(getattr(q.prompts, p.name))
            out[QUEUE_PREFIX + name] = shown
        return out


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _shown(section: str, key: str, value: object) -> object:
    """How a value may be displayed: secrets masked, redis URL password masked."""
    if (section, key) in SECRETS:
        return MASK if value else ""
    if (section, key) == ("redis", "url") and isinstance(value, str):
        try:
            return redact_url(value)
        except ValueError:
            return MASK
    return _plain(value)


# --- loading -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    value: str
    origin: str  # "line 12", "/etc/asterisk/callback_ari.conf:12" or "$CALLBACK_ARI_..."
    template: str = ""  # the template the value was inherited from


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, override from ``env`` (default os.environ) and validate the config file.

    Raises ConfigError listing every problem found.
    """
    file = Path(path) if path else Path(DEFAULT_PATH)
    try:
        entries, sections, problems = read_ini_file(file)
    except FileNotFoundError as exc:
        hint = f"does not exist; start from the example: callback-ari config sample > {file}"
        raise ConfigError([ConfigProblem("file", str(file), hint)]) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigProblem("file", str(file), f"cannot read: {reason}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("file", str(file), "is not UTF-8 text")]) from exc
    return _validate(entries, sections, problems, os.environ if env is None else env)


PLACEHOLDER_PREFIX = "change-me"  # the example's secrets: change-me-to-a-long-random-secret


def refuse_placeholders(config: Config) -> None:
    """Raise ConfigError when a secret still holds the example's ``change-me-...`` placeholder."""
    problems = []
    for section, key in sorted(SECRETS):
        if str(getattr(getattr(config, section), key)).startswith(PLACEHOLDER_PREFIX):
            hint = (
                f"still the example's placeholder: set the real one (the {_SECRET_SOURCE[section]})"
                f" here or in ${env_name(section, key)}"
            )
            problems.append(ConfigProblem(section, key, hint))
    if problems:
        raise ConfigError(problems)


_SECRET_SOURCE = {
    "ari": "password of this user in ari.conf",
    "ami": "secret of this user in manager.conf",
    "http": "token HTTP API clients send",
}


def parse_config(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate config file text (plus env overrides) into a Config, or raise ConfigError."""
    entries, sections, problems = read_ini(text)
    return _validate(entries, sections, problems, env or {})


def _validate(
    entries: list[Entry],
    sections: list[str],
    problems: list[ConfigProblem],
    env: Mapping[str, str],
) -> Config:
    raw: dict[str, dict[str, _Raw]] = {}
    queue_sections = _check_sections(sections, problems)
    valid = {*FIXED_SECTIONS, *queue_sections}
    for e in entries:
        keys = schema_for(e.section)
        if keys is None or e.section not in valid:
            continue  # the section itself was reported
        seen = raw.setdefault(e.section, {})
        have = seen.get(e.key)
        inherited = f", from template [{e.template}]" if e.template else ""
        if e.key not in keys:
            problems.append(ConfigProblem(e.section, e.key, f"unknown key ({e.where}{inherited})"))
        elif have is None or (have.template and e.template != have.template):
            # The section's own line replaces a template's value, a later template an earlier's.
            seen[e.key] = _Raw(e.value, e.where, e.template)
        elif e.template and not have.template:
            continue  # the section set it itself
        elif e.key in LIST_KEYS:
            seen[e.key] = _Raw(f"{have.value}, {e.value}", have.origin, have.template)
        else:
            problems.append(
                ConfigProblem(e.section, e.key, f"set twice ({have.origin} and {e.where})")
            )
    _apply_env(env, queue_sections, raw, problems)
    for section, key in REQUIRED:
        if not raw.get(section, {}).get(key, _Raw("", "")).value:
            hint = f"is required (set it here or in ${env_name(section, key)})"
            problems.append(ConfigProblem(section, key, hint))
    if not queue_sections:
        problems.append(
            ConfigProblem("queue:NAME", "", "at least one [queue:NAME] section is required")
        )

    converted = {
        s: _convert(s, raw.get(s, {}), problems) for s in (*FIXED_SECTIONS, *queue_sections)
    }
    _cross_check(converted, raw, problems)
    if problems:
        raise ConfigError(problems)
    queues: dict[str, QueueConfig] = {}
    for section in queue_sections:
        values = dict(converted[section])
        explicit = {k[7:]: values.pop(k) for k in list(values) if k.startswith("prompt_")}
        prompts = {**language_defaults(str(values.get("language", ""))), **explicit}
        name = section[len(QUEUE_PREFIX) :]
        queues[name] = QueueConfig(name=name, prompts=Prompts(**prompts), **values)
    c = converted
    return Config(
        general=GeneralConfig(**c["general"]),
        ari=AriConfig(**c["ari"]),
        ami=AmiConfig(**c["ami"]),
        redis=RedisConfig(**c["redis"]),
        http=HttpConfig(**c["http"]),
        agi=AgiConfig(**c["agi"]),
        queues=queues,
    )


def _check_sections(sections: list[str], problems: list[ConfigProblem]) -> list[str]:
    """Report unknown or badly named sections; return the valid queue sections in order."""
    queues: list[str] = []
    seen: dict[str, str] = {}
    for section in sections:
        if section.startswith(QUEUE_PREFIX):
            name = section[len(QUEUE_PREFIX) :]
            if not QUEUE_NAME.fullmatch(name):
                msg = "queue name must be letters, digits, '_', '.', '+' or '-'"
                problems.append(ConfigProblem(section, "", msg))
            elif (other := seen.get(name.lower())) is not None:
                msg = f"same queue as [{other}] (queue names ignore case)"
                problems.append(ConfigProblem(section, "", msg))
            else:
                seen[name.lower()] = section
                queues.append(section)
        elif section not in SCHEMA:
            msg = "unknown section (expected general, ari, ami, redis, http, agi or queue:NAME)"
            problems.append(ConfigProblem(section, "", msg))
    return queues


def _apply_env(
    env: Mapping[str, str],
    queue_sections: list[str],
    raw: dict[str, dict[str, _Raw]],
    problems: list[ConfigProblem],
) -> None:
    """Let CALLBACK_ARI_<SECTION>_<KEY> variables override (or supply) file values."""
    targets: dict[str, tuple[str, str]] = {}
    for section in FIXED_SECTIONS:
        targets.update({env_name(section, key): (section, key) for key in SCHEMA[section]})
    for section in queue_sections:
        first = env_name(section, "enabled")
        if first in targets:
            other = targets[first][0]
            msg = f"has the same environment names as [{other}] ('-' and '.' become '_')"
            problems.append(ConfigProblem(section, "", msg))
            continue
        targets.update({env_name(section, key): (section, key) for key in QUEUE_SCHEMA})
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        target = targets.get(var)
        if target is None:
            msg = "not a known setting (a queue needs its [queue:NAME] section in the file)"
            problems.append(ConfigProblem("environment", var, msg))
            continue
        section, key = target
        raw.setdefault(section, {})[key] = _Raw(env[var], "$" + var)


def _convert(
    section: str, values: dict[str, _Raw], problems: list[ConfigProblem]
) -> dict[str, Any]:
    keys = schema_for(section) or {}
    out: dict[str, Any] = {}
    for key, item in values.items():
        try:
            out[key] = keys[key](item.value)
        except ValueError as exc:
            where = f" ({item.origin})" if item.origin.startswith("$") else ""
            problems.append(
                ConfigProblem(section, key, f"{exc}{where}", _display(section, key, item))
            )
    return out


def _display(section: str, key: str, item: _Raw) -> str:
    if (section, key) in SECRETS:
        return MASK
    if (section, key) == ("redis", "url"):
        try:
            return redact_url(item.value)
        except ValueError:
            return MASK
    return item.value


def _cross_check(
    converted: dict[str, dict[str, Any]],
    raw: dict[str, dict[str, _Raw]],
    problems: list[ConfigProblem],
) -> None:
    """Checks that involve two keys: business hours in their time zone, Sentinel settings."""
    for section, values in converted.items():
        if not section.startswith(QUEUE_PREFIX) or "hours" not in values:
            continue
        tz = values.get("timezone", "UTC")
        if "timezone" in raw[section] and "timezone" not in values:
            tz = "UTC"  # the zone itself was reported; still check the hours syntax
        try:
            BusinessHours.parse(str(values["hours"]), str(tz))
        except ValueError as exc:
            problems.append(ConfigProblem(section, "hours", str(exc), raw[section]["hours"].value))
    redis = converted["redis"]
    if redis.get("sentinel_master") and not redis.get("sentinels"):
        problems.append(ConfigProblem("redis", "sentinels", "required when sentinel_master is set"))
    if redis.get("sentinels") and not redis.get("sentinel_master"):
        problems.append(ConfigProblem("redis", "sentinel_master", "required with sentinels"))
