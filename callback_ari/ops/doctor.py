"""``callback-ari check``: a doctor for a live installation, with the fix for every failure.

Each check is independent and reports pass, warn or fail with a one-line detail and, when not
passing, the fix an administrator can apply. Nothing here changes the PBX or the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
import redis.exceptions

from callback_ari.asterisk.ami import AmiClient
from callback_ari.asterisk.ari import AriClient
from callback_ari.config.loader import Config
from callback_ari.errors import (
    AmiActionError,
    AmiAuthError,
    AmiError,
    AriAuthError,
    AriError,
    AriNotFound,
    StoreError,
)
from callback_ari.store.store import connect_redis

CHECK_TIMEOUT_S = 10.0


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

    def __init__(self, config: Config) -> None:
        self._cfg = config
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
            await self._check_app(ari, app)
            await self._check_prompts(ari)

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
        missing: dict[str, set[str]] = {}
        checked: dict[str, bool] = {}
        for q in self._cfg.queues.values():
            for uri in q.prompts.all_uris():
                scheme, _, target = uri.partition(":")
                if scheme != "sound":
                    continue
                if target not in checked:
                    checked[target] = await ari.sound_exists(target)
                if not checked[target]:
                    missing.setdefault(target, set()).add(q.name)
        if missing:
            names = ", ".join(f"sound:{s} ({'/'.join(sorted(qs))})" for s, qs in missing.items())
            self._add(
                "ari.prompts",
                Status.FAIL,
                f"missing on the server: {names}",
                "install asterisk-core-sounds-en (and -extra), or record the prompt and "
                "set prompt_<name> in the queue section",
            )
        else:
            self._add("ari.prompts", Status.PASS, f"{len(checked)} sound prompts present")

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
            await self._check_contexts(ami)
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

    async def _check_contexts(self, ami: AmiClient) -> None:
        # (context, queue) -> the [queue:X] keys that name the context
        wanted: dict[tuple[str, str], list[str]] = {}
        for q in self._cfg.queues.values():
            wanted.setdefault((q.return_context, q.name), []).append("return_context")
            wanted.setdefault((q.connect_context, q.name), []).append("connect_context")
        for (context, exten), keys in wanted.items():
            check = f"dialplan.{exten}@{context}"
            try:
                await ami.show_dialplan(context, exten)
            except AmiActionError as exc:
                if "context" in exc.message.lower():
                    fix = (
                        f"define [{context}] (extensions_callback.conf has the callback-* "
                        "contexts: #include it in extensions.conf) and `dialplan reload`, "
                        f"or set {' / '.join(keys)} in [queue:{exten}] to a context that exists"
                    )
                else:
                    fix = (
                        f"add extension {exten!r} to [{context}] (copy the 'support' block of "
                        "extensions_callback.conf), then `dialplan reload`"
                    )
                self._add(check, Status.FAIL, exc.message, fix)
            else:
                self._add(check, Status.PASS, f"{exten}@{context} exists")

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
