"""``callback-ari check``: a doctor for a live installation, with the fix for every failure.

Each check is independent and reports pass, warn or fail with a one-line detail and, when not
passing, the fix an administrator can apply. Nothing here changes the PBX or the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions

from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ari import AriClient
from callback_ari.config.loader import Config
from callback_ari.core.reasons import parse_reasons
from callback_ari.errors import (
    AmiActionError,
    AmiAuthError,
    AmiError,
    AriAuthError,
    AriError,
    AriNotFound,
    StoreError,
)
from callback_ari.ops import freepbx
from callback_ari.ops.doctor_kit import (
    KIT_AGENT_CONFIRM_CONTEXT,
    KIT_EXIT_CONTEXT,
    KIT_OFFER_CONTEXT,
    KIT_QUEUE_CONTEXT,
    check_reached_mark,
)
from callback_ari.ops.doctor_recordings import check_recordings
from callback_ari.store.store import connect_redis

CHECK_TIMEOUT_S = 10.0
RESERVE_PROBE = "Local/callback-ari-check@invalid"  # a member no queue has: unpausing it is a no-op
MIN_ASTERISK = 21  # Asterisk 21 dropped Queue()'s macro argument; the kit passes position 9th
DEFAULT_LANGUAGE = "en"  # asterisk.conf defaultlanguage, what a channel has unless set
# Files Asterisk's say-number and say-digits use for the read-back and the wait estimate.
SAY_SOUNDS = tuple(f"digits/{d}" for d in "0123456789")


def asterisk_major(version: str) -> int | None:
    """22 from "22.10.1+dfsg...", "GIT-22-22.0.0-pre1-..." or "certified-20.7-cert1"."""
    match = re.search(r"(?:^|[-/])(\d{2})\.\d", version)
    return int(match.group(1)) if match else None


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's table."""

    check: str
    status: Status
    detail: str
    fix: str = ""


class Doctor:
    """Runs every check against the configured ARI, AMI and Redis."""

    def __init__(self, config: Config, *, asterisk_etc: Path = freepbx.ETC) -> None:
        self._cfg = config
        self._asterisk_etc = asterisk_etc  # read for FreePBX's generated queue files only
        self.findings: list[Finding] = []

    def _add(self, check: str, status: Status, detail: str, fix: str = "") -> None:
        self.findings.append(Finding(check, status, detail, fix))

    async def run(self) -> list[Finding]:
        for name, check in (
            ("ari", self._check_ari),
            ("ami", self._check_ami),
            ("redis", self._check_redis),
        ):
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await check()
            except TimeoutError:
                self._add(
                    name,
                    Status.FAIL,
                    f"no answer within {CHECK_TIMEOUT_S:.0f} s",
                    f"check that {name} is running and reachable from this host",
                )
        return self.findings

    # --- ARI --------------------------------------------------------------------------

    async def _check_ari(self) -> None:
        a = self._cfg.ari
        app = self._cfg.general.app
        async with AriClient(a.url, a.username, a.password, app, verify_tls=a.verify_tls) as ari:
            try:
                info = await ari.asterisk_info()
            except AriAuthError:
                self._add(
                    "ari.login",
                    Status.FAIL,
                    f"ARI refused user {a.username!r}",
                    "make [ari] username/password match a user in ari.conf "
                    "(type = user, read_only = no)",
                )
                return
            except AriError as exc:
                self._add(
                    "ari.reachable",
                    Status.FAIL,
                    f"{a.url}: {exc}",
                    "enable http.conf (enabled = yes) and ari.conf, check [ari] url",
                )
                return
            version = info.get("system", {}).get("version", "?") if isinstance(info, dict) else "?"
            self._add("ari.login", Status.PASS, f"Asterisk {version} at {a.url}")
            self._check_version(str(version))
            await self._check_app(ari, app)
            await self._check_prompts(ari)
            await check_recordings(ari, self._cfg, self._report)

    def _report(self, check: str, status: str, detail: str, fix: str) -> None:
        self._add(check, Status(status), detail, fix)

    def _check_version(self, version: str) -> None:
        major = asterisk_major(version)
        if major is None:
            self._add(
                "ari.version",
                Status.WARN,
                f"cannot tell the major version from {version!r}",
                f"the kit needs Asterisk {MIN_ASTERISK}+ (Queue() without the macro argument)",
            )
        elif major < MIN_ASTERISK:
            self._add(
                "ari.version",
                Status.FAIL,
                f"Asterisk {major} is not supported: its Queue() still takes a macro argument, "
                "so the kit's Queue() line would pass the position as the rule",
                f"upgrade to Asterisk {MIN_ASTERISK} or later (22 LTS is tested)",
            )
        else:
            self._add("ari.version", Status.PASS, f"Asterisk {major}: the kit's Queue() layout")

    async def _check_app(self, ari: AriClient, app: str) -> None:
        try:
            await ari.application()
        except AriNotFound:
            self._add("ari.app", Status.PASS, f"Stasis app {app!r} is free")
            return
        except AriError as exc:
            self._add("ari.app", Status.WARN, f"could not read application {app!r}: {exc}")
            return
        self._add(
            "ari.app",
            Status.WARN,
            f"Stasis app {app!r} is registered by a connected client",
            "fine if it is this service; otherwise another program owns the name: "
            "set [general] app to a different name",
        )

    async def _check_prompts(self, ari: AriClient) -> None:
        """Every sound: prompt, and the digits Asterisk says numbers with, in every language
        a queue plays them in (``language``; empty = the channel's, checked as en)."""
        missing: dict[tuple[str, str], set[str]] = {}  # (sound, language) -> queues
        checked: dict[tuple[str, str], bool] = {}
        for q in self._cfg.queues.values():
            lang = q.language or DEFAULT_LANGUAGE
            reason_media = [m for r in parse_reasons(q.reasons) for m in r.media]
            uris = (*q.prompts.all_uris(skip=q.unused_prompts()), *reason_media)
            sounds = [u.partition(":")[2] for u in uris if u.startswith("sound:")]
            for target in (*sounds, *SAY_SOUNDS):
                key = (target, lang)
                if key not in checked:
                    checked[key] = await ari.sound_exists(target, lang)
                if not checked[key]:
                    missing.setdefault(key, set()).add(q.name)
        languages = sorted({lang for _, lang in checked})
        if missing:
            names = ", ".join(
                f"sound:{s} in {lang} ({'/'.join(sorted(qs))})" for (s, lang), qs in missing.items()
            )
            packages = " ".join(
                f"asterisk-core-sounds-{lang.split('_')[0]}"
                for lang in sorted({k[1] for k in missing})
            )
            self._add(
                "ari.prompts",
                Status.FAIL,
                f"missing on the server: {names}",
                f"install {packages} (and -extra; Debian puts Spanish in es_MX_f_Allison: link "
                "sounds/es to it), or record the prompt and set prompt_<name> in the queue "
                "section, or set language to one that is installed",
            )
        else:
            self._add(
                "ari.prompts",
                Status.PASS,
                f"{len({s for s, _ in checked})} sound prompts present in {', '.join(languages)}",
            )

    # --- AMI --------------------------------------------------------------------------

    async def _check_ami(self) -> None:
        m = self._cfg.ami
        ami = AmiClient(
            m.host,
            m.port,
            m.username,
            m.secret,
            ping_interval=m.ping_interval,
            ping_timeout=m.ping_timeout,
        )
        try:
            await ami.connect_once()
        except AmiAuthError:
            self._add(
                "ami.login",
                Status.FAIL,
                f"AMI refused user {m.username!r}",
                "make [ami] username/secret match a section of manager.conf",
            )
            return
        except AmiError as exc:
            self._add(
                "ami.reachable",
                Status.FAIL,
                f"{m.host}:{m.port}: {exc}",
                "enable manager.conf (enabled = yes, port, bindaddr/permit)",
            )
            return
        try:
            self._add("ami.login", Status.PASS, f"logged in as {m.username!r}")
            await self._check_queues(ami)
            is_freepbx = await self._detect_freepbx(ami)
            await self._check_contexts(ami, on_freepbx=is_freepbx)
            await check_reached_mark(ami, self._cfg, self._report)
            if is_freepbx:
                self._check_freepbx_queues()
        finally:
            await ami.aclose()

    async def _check_queues(self, ami: AmiClient) -> None:
        for name in self._cfg.queues:
            items = await ami.queue_status(name)
            if any(i.name == "QueueParams" for i in items):
                self._add(f"queue.{name}", Status.PASS, "exists in app_queue")
            else:
                self._add(
                    f"queue.{name}",
                    Status.FAIL,
                    "QueueStatus does not know this queue",
                    f"define [{name}] in queues.conf and `queue reload all`, or remove "
                    f"[queue:{name}] from callback_ari.conf",
                )
            try:
                await ami.getvar(f"QUEUE_MEMBER({name},ready)")
            except AmiActionError as exc:
                self._add(
                    "ami.permissions",
                    Status.FAIL,
                    f"Getvar refused: {exc.message}",
                    "manager.conf: write = agent,reporting and read = agent,call",
                )
                return
            if self._cfg.queues[name].reserve_member and not await self._may_pause(ami, name):
                return

    async def _may_pause(self, ami: AmiClient, queue: str) -> bool:
        """Member reservations need QueuePause (write = agent). Unpausing a member that does
        not exist changes nothing: Asterisk answers "Interface not found" when the action is
        allowed and "Permission denied" when it is not."""
        try:
            await ami.queue_pause(RESERVE_PROBE, False, queue=queue)
        except AmiActionError as exc:
            if "permission" in exc.message.lower():
                self._add(
                    "ami.permissions",
                    Status.FAIL,
                    f"QueuePause refused: {exc.message} (reserve_member = yes needs it)",
                    "manager.conf: write = agent,reporting, or reserve_member = no",
                )
                return False
        return True

    async def _detect_freepbx(self, ami: AmiClient) -> bool:
        for context in freepbx.FREEPBX_CONTEXTS:
            try:
                await ami.show_dialplan(context)
            except AmiActionError:
                return False
        self._add(
            "freepbx",
            Status.PASS,
            f"FreePBX dialplan found ([{'], ['.join(freepbx.FREEPBX_CONTEXTS)}]): "
            "the kit belongs in its *_custom.conf files",
        )
        return True

    async def _check_contexts(self, ami: AmiClient, *, on_freepbx: bool = False) -> None:
        # (context, extension) -> the [queue:X] keys that name the context ("" = the kit's own)
        wanted: dict[tuple[str, str], list[str]] = {}
        for q in self._cfg.queues.values():
            wanted.setdefault((KIT_QUEUE_CONTEXT, q.name), [])
            wanted.setdefault((KIT_OFFER_CONTEXT, q.name), [])
            wanted.setdefault((KIT_EXIT_CONTEXT, q.request_digit), [])
            wanted.setdefault((q.return_context, q.name), []).append("return_context")
            wanted.setdefault((q.connect_context, q.name), []).append("connect_context")
            if q.dialing_mode == "agent_first":
                wanted.setdefault((q.agent_context, q.name), []).append("agent_context")
                wanted.setdefault((KIT_AGENT_CONFIRM_CONTEXT, "s"), [])
        where = (
            "/etc/asterisk/extensions_custom.conf (FreePBX rewrites extensions.conf and "
            "extensions_additional.conf), then `fwconsole reload`"
            if on_freepbx
            else "extensions.conf, then `dialplan reload`"
        )
        for (context, exten), keys in wanted.items():
            check = f"dialplan.{exten}@{context}"
            try:
                await ami.show_dialplan(context, exten)
            except AmiActionError as exc:
                if "context" in exc.message.lower():
                    fix = (
                        f"define [{context}]: the callback-* contexts are in "
                        f"extensions_callback.conf; #include it in {where}"
                    )
                    if keys:
                        fix += f", or set {' / '.join(keys)} in [queue:{exten}] to one that exists"
                elif context == KIT_EXIT_CONTEXT:
                    fix = (
                        f"[{context}] needs extension {exten!r}, the queue's request_digit "
                        f"(extensions_callback.conf defines 1); add it in {where}"
                    )
                else:
                    fix = (
                        f"add extension {exten!r} to [{context}] (copy the 'support' block of "
                        f"extensions_callback.conf) in {where}"
                    )
                self._add(check, Status.FAIL, exc.message, fix)
            else:
                self._add(check, Status.PASS, f"{exten}@{context} exists")

    def _check_freepbx_queues(self) -> None:
        """FreePBX: each queue's context= must be the kit's exit context, set where FreePBX
        does not overwrite it (queues_post_custom.conf)."""
        for q in self._cfg.queues.values():
            check = f"freepbx.{q.name}.context"
            fix = freepbx.context_fix(q.name, KIT_EXIT_CONTEXT, self._asterisk_etc)
            try:
                found = freepbx.read_queue_context(q.name, self._asterisk_etc)
            except OSError as exc:
                self._add(
                    check,
                    Status.WARN,
                    f"cannot read FreePBX's queue files to check context= ({exc.strerror})",
                    f"run check as root, or verify by hand: {fix}",
                )
                continue
            if found.effective == KIT_EXIT_CONTEXT:
                self._add(check, Status.PASS, f"context = {KIT_EXIT_CONTEXT} ({freepbx.CUSTOM})")
            elif found.effective is None:
                self._add(
                    check,
                    Status.FAIL,
                    f"queue {q.name} has no context=: the exit digit "
                    f"{q.request_digit!r} does nothing (queues_post_custom.conf not used?)",
                    fix,
                )
            else:
                self._add(
                    check,
                    Status.FAIL,
                    f"queue {q.name} has context = {found.effective} (a Break Out Menu, or "
                    f"another context), not {KIT_EXIT_CONTEXT}",
                    fix,
                )

    # --- Redis ------------------------------------------------------------------------

    async def _check_redis(self) -> None:
        r = self._cfg.redis
        client: aioredis.Redis = connect_redis(
            r.url, sentinel_master=r.sentinel_master, sentinels=r.sentinels
        )
        try:
            probe = f"{r.prefix}:doctor:probe"
            try:
                await client.set(probe, "1", ex=10)
                await client.delete(probe)
            except (redis.exceptions.RedisError, OSError, StoreError) as exc:
                self._add(
                    "redis",
                    Status.FAIL,
                    f"cannot write: {type(exc).__name__}: {exc}",
                    "check [redis] url (host, port, password/ACL user) and that "
                    "redis-server is running",
                )
                return
            self._add("redis", Status.PASS, "reachable and writable")
            info = await client.info("persistence")
            aof = int(info.get("aof_enabled", 0))
            rdb = ""
            with contextlib.suppress(redis.exceptions.RedisError):
                rdb = str((await client.config_get("save")).get("save", ""))
            if aof:
                self._add("redis.persistence", Status.PASS, "append-only file on")
            elif rdb.strip():
                self._add(
                    "redis.persistence",
                    Status.WARN,
                    f"RDB snapshots only (save {rdb})",
                    "a crash can lose the last minutes of callbacks: set appendonly yes",
                )
            else:
                self._add(
                    "redis.persistence",
                    Status.WARN,
                    "no persistence: AOF and RDB are off",
                    "callbacks are lost when Redis restarts: set appendonly yes in redis.conf",
                )
        finally:
            await client.aclose()


def format_findings(findings: list[Finding]) -> str:
    """The pass/fail table, with the fix under every warning or failure."""
    width = max((len(f.check) for f in findings), default=5)
    lines = [f"{'CHECK'.ljust(width)}  STATUS  DETAIL"]
    for f in findings:
        lines.append(f"{f.check.ljust(width)}  {f.status.value.upper():<6}  {f.detail}")
        if f.fix and f.status is not Status.PASS:
            lines.append(f"{''.ljust(width)}  {'':<6}  fix: {f.fix}")
    failed = sum(f.status is Status.FAIL for f in findings)
    warned = sum(f.status is Status.WARN for f in findings)
    lines.append(f"{len(findings)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)


def findings_json(findings: list[Finding]) -> str:
    """The findings for scripts: ``{"ok", "failed", "warnings", "checks": [...]}``."""
    failed = sum(f.status is Status.FAIL for f in findings)
    doc = {
        "ok": failed == 0,
        "failed": failed,
        "warnings": sum(f.status is Status.WARN for f in findings),
        "checks": [
            {"check": f.check, "status": f.status.value, "detail": f.detail, "fix": f.fix}
            for f in findings
        ],
    }
    return json.dumps(doc, indent=2)


async def run_checks(config: Config) -> list[Finding]:
    return await Doctor(config).run()


CheckRunner = Callable[[Config], Awaitable[list[Finding]]]
