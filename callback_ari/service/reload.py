"""What a running service takes from a re-read config (SIGHUP), and what waits for a restart.

Reloading must never drop a caller in a dialogue or a callback being dialled, so only settings
read afresh for each decision are swapped in: every setting of a queue that exists in both the
running and the new file (thresholds, prompts, hours, dial_template, retries, ...), and the log
level, number masking, dialogue timeout and recording retention. Links, listeners and
identities (ARI, AMI, Redis, HTTP, AGI, the Stasis app name, the instance id) and the set of
queues are fixed at start-up:
a change to them is reported as needing a restart and the running value is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from callback_ari.config.loader import Config, QueueConfig
from callback_ari.config.schema import QUEUE_PREFIX
from callback_ari.config.settings import FIXED_SECTIONS

RELOADABLE_GENERAL = frozenset(
    {"log_level", "mask_numbers", "dialogue_timeout", "recording_retention"}
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The config to run with from now on, and what changed (``[section] key`` names only)."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(running: Config, wanted: Config) -> ReloadPlan:
    """Merge ``wanted`` into ``running`` as far as it is safe without a restart."""
    applied: list[str] = []
    restart: list[str] = []
    general = running.general
    for section in FIXED_SECTIONS:
        old, new = getattr(running, section), getattr(wanted, section)
        for f in dataclasses.fields(old):
            if getattr(old, f.name) == getattr(new, f.name):
                continue
            name = f"[{section}] {f.name}"
            if section == "general" and f.name in RELOADABLE_GENERAL:
                general = dataclasses.replace(general, **{f.name: getattr(new, f.name)})
                applied.append(name)
            else:
                restart.append(name)
    queues: dict[str, QueueConfig] = {}
    for name, old_q in running.queues.items():
        new_q = wanted.queues.get(name)
        if new_q is None:
            restart.append(f"[{QUEUE_PREFIX}{name}] removed")
            queues[name] = old_q
            continue
        queues[name] = new_q
        applied.extend(f"[{QUEUE_PREFIX}{name}] {key}" for key in _changed_keys(old_q, new_q))
    restart.extend(
        f"[{QUEUE_PREFIX}{name}] added" for name in wanted.queues if name not in running.queues
    )
    config = dataclasses.replace(running, general=general, queues=queues)
    return ReloadPlan(config, tuple(applied), tuple(restart))


def _changed_keys(old: QueueConfig, new: QueueConfig) -> list[str]:
    keys = [
        f.name
        for f in dataclasses.fields(old)
        if f.name != "prompts" and getattr(old, f.name) != getattr(new, f.name)
    ]
    keys.extend(
        "prompt_" + name
        for name, media in old.prompts.as_mapping().items()
        if new.prompts[name] != media
    )
    return keys
