"""The service's configuration: one Asterisk-style file plus env overrides, read once, frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callback_ari.config.ini import Entry, read_ini, read_ini_file
from callback_ari.config.schema import (
    ENV_PREFIX,
    MASK,
    QUEUE_NAME,
    QUEUE_PREFIX,
    env_name,
    redact_url,
)
from callback_ari.config.settings import (
    FIXED_SECTIONS,
    LIST_KEYS,
    PROMPT_PREFIX,
    QUEUE_SCHEMA,
    REQUIRED,
    SCHEMA,
    SECRETS,
    AgiConfig,
    AmiConfig,
    AriConfig,
    Config,
    GeneralConfig,
    HttpConfig,
    Prompts,
    QueueConfig,
    RedisConfig,
    schema_for,
)
from callback_ari.core.hours import BusinessHours
from callback_ari.core.prompts import language_defaults
from callback_ari.errors import ConfigError, ConfigProblem

__all__ = [
    "DEFAULT_PATH", "AgiConfig", "AmiConfig", "AriConfig", "Config", "GeneralConfig",
    "HttpConfig", "Prompts", "QueueConfig", "RedisConfig", "load_config", "parse_config",
    "refuse_placeholders",
]  # fmt: skip

DEFAULT_PATH = "/etc/asterisk/callback_ari.conf"


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
        explicit = {
            k.removeprefix(PROMPT_PREFIX): values.pop(k)
            for k in list(values)
            if k.startswith(PROMPT_PREFIX)
        }
        prompts = {**language_defaults(str(values.get("language", ""))), **explicit}
        name = section[len(QUEUE_PREFIX) :]
        queues[name] = QueueConfig(name=name, prompts=Prompts(prompts), **values)
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
