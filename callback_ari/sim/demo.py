"""``callback-ari demo``: the real service against the simulated PBX and a private redis-server.

Everything runs in this process except redis-server: ``SimAsterisk`` (ARI + AMI on loopback
sockets, running our dialplan kit), the real ``Service`` with a generated config, and the
script of ``demo_script`` playing the callers and agents. With ``--asterisk`` the same script
plays on the real sandbox Asterisk 22 (dialplan/sandbox/pbx) instead of the simulator. The
service's structured logs stream on stdout as configured by the CLI; the script narrates its
own steps as ``demo:`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import callback_ari
from callback_ari.config.loader import Config, parse_config
from callback_ari.errors import ExitCode
from callback_ari.masking import mask
from callback_ari.models import Callback, State
from callback_ari.service.service import Service
from callback_ari.sim.demo_script import (
    AGENTS,
    OFFER_HOLD_S,
    QUEUE,
    RETRY_S,
    AgentCall,
    Caller,
    Choice,
    DemoFailed,
    Scenario,
    leaf_exceptions,
    make_cast,
)
from callback_ari.sim.demo_stage import APP, PbxLink, SandboxStage, SimStage, Stage
from callback_ari.sim.sandbox import Harness, Sandbox
from callback_ari.sim.simpbx.redis_process import RedisProcess
from callback_ari.sim.simpbx.sim import SimAsterisk

# Real seconds the script may take before it gives up: 90 s at the default 10x (a normal run
# takes about 35 s; the whole demo stays under 2 minutes), longer when slowed down. The real
# PBX plays its prompts in real time whatever the speed: it gets DEADLINE_PBX_S more.
DEADLINE_BASE_S, DEADLINE_STORY_S, DEADLINE_PBX_S = 30.0, 600.0, 30.0
READY_TIMEOUT_S = 15.0
KIT_NAME = "extensions_callback.conf"
INCOMING = (
    f"[from-trunk]\nexten => {QUEUE},1,Gosub(callback-queue,{QUEUE},1())\n same => n,Hangup()\n"
)
REDIS_MISSING = (
    "callback-ari demo: redis-server is not installed; install it with "
    "`sudo apt-get install -y redis-server` (or run `bash .ci/install`)"
)


def say(text: str) -> None:
    """One narration line on stdout (the logs go there too, so the two interleave in order)."""
    print(f"demo: {text}", flush=True)


def find_kit() -> Path | None:
    """Our dialplan kit next to the package (a source checkout), or None when installed."""
    package = Path(callback_ari.__file__).resolve().parent
    for path in (package.parent / "dialplan" / KIT_NAME, package / "data" / KIT_NAME):
        if path.is_file():
            return path
    return None


def real_seconds(story_s: float, speed: float, minimum: int = 1) -> int:
    """A story duration as the whole real seconds the service's config needs."""
    return max(minimum, round(story_s / speed))


def demo_config(pbx: PbxLink, redis_url: str, speed: float) -> Config:
    """The service's config: the PBX's credentials, one queue, demo-sized thresholds."""
    queue = {
        "offer_threshold": real_seconds(OFFER_HOLD_S, speed),
        "retry_interval": real_seconds(RETRY_S, speed),
        "max_attempts": 3,
        "dial_template": pbx.dial_template,
        "ring_timeout": 20,  # the simulator scales it; the service's own guard adds 5 s
        "confirm_timeout": 5,
        "digit_timeout": 3,
        "response_timeout": 8,
    }
    lines = [
        "[general]", f"app = {APP}", "instance_id = demo", "lease_seconds = 10",
        "resync_interval = 30", "dialogue_timeout = 60",
        "[ari]", f"url = {pbx.ari_url}", f"username = {pbx.ari_user}",
        f"password = {pbx.ari_password}",
        "[ami]", f"host = {pbx.ami_host}", f"port = {pbx.ami_port}", f"username = {pbx.ami_user}",
        f"secret = {pbx.ami_secret}", "ping_interval = 5", "ping_timeout = 5",
        "[redis]", f"url = {redis_url}", "prefix = demo",
        "[http]", "enabled = no",
        "[agi]", "enabled = no",
        f"[queue:{QUEUE}]", *(f"{key} = {value}" for key, value in queue.items()),
    ]  # fmt: skip
    return parse_config("\n".join(lines) + "\n", env={})


def run_demo(*, speed: float = 10.0, seed: int = 7, asterisk: bool = False) -> int:
    """Play the demo; 0 if every callback connected and the declined caller was served.

    ``asterisk``: on the real sandbox Asterisk (CBPBX_* pick the instance) instead of the
    simulator; it is started fresh and stopped at the end.
    """
    if not (math.isfinite(speed) and speed > 0):
        print(f"callback-ari demo: --speed must be a positive number, got {speed}", file=sys.stderr)
        return ExitCode.USAGE
    box = Sandbox.from_env() if asterisk else None
    if box is not None and (reason := box.unavailable()) is not None:
        print(f"callback-ari demo --asterisk: {reason}", file=sys.stderr)
        return ExitCode.ASTERISK  # no sandbox PBX to play on
    if shutil.which("redis-server") is None:
        print(REDIS_MISSING, file=sys.stderr)
        return ExitCode.REDIS
    redis = RedisProcess()
    try:
        try:
            redis.start()
        except RuntimeError as exc:
            print(f"callback-ari demo: could not start redis-server: {exc}", file=sys.stderr)
            return ExitCode.REDIS
        return asyncio.run(_demo(speed, seed, redis.url, box))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; the service, the PBX and redis-server are stopped")
        return ExitCode.INTERRUPTED
    finally:
        redis.close()  # stops redis-server and removes its temporary directory


@contextlib.asynccontextmanager
async def _stage(box: Sandbox | None, speed: float, dialplan: str | None) -> AsyncIterator[Stage]:
    """The simulator, or the sandbox Asterisk started fresh (and stopped after) with a harness."""
    if box is None:
        async with SimAsterisk(time_scale=1 / speed, dialplan=dialplan) as sim:
            yield SimStage(sim)
        return
    await asyncio.to_thread(box.start)  # the script: lays out a fresh config, starts Asterisk
    try:
        version = await asyncio.to_thread(box.cli, "core show version")
        async with Harness(box) as harness:
            yield SandboxStage(harness, speed=speed, version=version.split(" built")[0].strip())
    finally:
        await asyncio.shield(asyncio.to_thread(box.stop))


async def _demo(speed: float, seed: int, redis_url: str, box: Sandbox | None) -> int:
    main = asyncio.current_task()
    assert main is not None
    stopping = asyncio.Event()

    def interrupt() -> None:
        # Ctrl-C reaches redis-server too (same process group): whatever fails after this is
        # the interruption's doing, not a demo failure. A second Ctrl-C does not cut cleanup.
        if not stopping.is_set():
            stopping.set()
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(sig, interrupt)
    started = time.monotonic()
    kit = find_kit()
    cast = make_cast(seed)
    dialplan = kit.read_text() + INCOMING if kit else None
    deadline_s = DEADLINE_BASE_S + DEADLINE_STORY_S / speed
    async with _stage(box, speed, dialplan) as stage:
        scenario = Scenario(
            stage,
            cast,
            speed=speed,
            deadline_s=deadline_s + (DEADLINE_PBX_S if box else 0.0),
            narrate=say,
        )
        await scenario.prepare()
        config = demo_config(stage.link, redis_url, speed)
        _header(stage.link, config, None if box else kit, speed, seed, redis_url)
        service = Service(config)
        failures: list[str] = []
        callbacks: list[Callback] = []
        try:
            async with asyncio.TaskGroup() as tg:
                service_task = tg.create_task(service.run(), name="demo-service")
                try:
                    await _until_ready(service)
                    assert service.store is not None
                    await scenario.run(service.store)
                    callbacks = await service.store.list(queue=QUEUE, limit=100)
                finally:
                    service_task.cancel()
        except* DemoFailed as group:
            failures += [str(exc) for exc in leaf_exceptions(group)]
        except* Exception as group:
            failures += [f"stopped by an error: {exc!r}" for exc in leaf_exceptions(group)]
    if stopping.is_set():
        raise asyncio.CancelledError  # reported by run_demo, after redis-server is stopped
    if failures:
        return _failed(failures)
    lines, problems = summarize(scenario, cast, callbacks)
    for line in lines:
        say(line)
    if scenario.problems or problems:
        return _failed([*scenario.problems, *problems])
    served = ", ".join(c.name for c in cast if c.choice is Choice.DECLINE)
    connected = sum(1 for c in cast if c.callback_number)
    say(
        f"OK: {connected} of {connected} callbacks connected; {served} (declined) was served; "
        f"{time.monotonic() - started:.1f} s"
    )
    return ExitCode.OK


def _header(
    pbx: PbxLink, config: Config, kit: Path | None, speed: float, seed: int, redis_url: str
) -> None:
    q = config.queues[QUEUE]
    clock = "story clock " if pbx.real_time else ""
    say(f"callback-ari demo, {clock}{speed:g}x real time, seed {seed}")
    say(pbx.description)
    say(f"private redis-server: {redis_url}; the real service runs in this process")
    if pbx.real_time:
        say("dialplan: the kit as `dialplan/sandbox/pbx start` installs it; customers dialled "
            f"as {pbx.dial_template}; prompts, rings and talk take real time")  # fmt: skip
    else:
        say(f"dialplan: {kit}" if kit else "dialplan: the simulator's built-in copy of the kit")
    say(
        f"queue {QUEUE}: agents {', '.join(AGENTS)}; offer after {q.offer_threshold} s on hold, "
        f"retry after {q.retry_interval} s (story time: {OFFER_HOLD_S:g} s and {RETRY_S:g} s)"
    )


async def _until_ready(service: Service) -> None:
    """Until the service has its Redis, ARI and AMI links (a crash ends the task group)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            # readiness() has no event to wait on: look again every 20 ms
            while not (service.started.is_set() and all(service.readiness().values())):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        down = [name for name, up in service.readiness().items() if not up]
        raise DemoFailed(
            f"the service did not connect within {READY_TIMEOUT_S:g} s: {down}"
        ) from None


def _failed(problems: list[str]) -> int:
    say("FAILED:")
    for problem in problems:
        say(f"  - {problem}")
    return ExitCode.FAILED


# --- the summary -------------------------------------------------------------------


def summarize(
    scenario: Scenario, cast: tuple[Caller, ...], callbacks: list[Callback]
) -> tuple[list[str], list[str]]:
    """The summary tables and every way the run differs from the script."""
    ledger = scenario.ledger
    by_number = {cb.number: cb for cb in callbacks}
    problems: list[str] = []
    rows: list[tuple[str, ...]] = [
        ("callback", "customer", "number", "requested", "attempts", "outcomes", "final")
    ]
    fates: list[tuple[str, ...]] = [("caller", "offer", "fate")]
    for caller in cast:
        number = caller.callback_number
        if number is None:
            fates.append((caller.name, caller.choice.value, _declined_fate(scenario, caller)))
            if caller.number in by_number:
                problems.append(f"a callback was stored for {caller.name}, who declined")
            continue
        cb = by_number.get(number)
        if cb is None:
            problems.append(f"no callback was stored for {caller.name}")
            fates.append((caller.name, caller.choice.value, "no callback stored"))
            continue
        outcomes = ledger.outcomes.get(cb.id, [])
        rows.append(
            (
                cb.id[:8],
                caller.name,
                mask(cb.number),
                caller.choice.value,
                str(cb.attempts),
                ", ".join(outcomes) or "-",
                cb.state.value,
            )
        )
        call = ledger.served(f"cb-{cb.id}-a")
        fates.append((caller.name, caller.choice.value, _callback_fate(cb, outcomes, call)))
        if cb.state is not State.CONNECTED:
            problems.append(f"{caller.name}'s callback ended {cb.state.value}, not connected")
        if tuple(outcomes) != caller.expected:
            problems.append(
                f"{caller.name}'s callback attempts went {list(outcomes)}, "
                f"expected {list(caller.expected)}"
            )
        if call is None and cb.state is State.CONNECTED:
            problems.append(f"{caller.name} was called back but never reached an agent")
    expected = {c.callback_number for c in cast if c.callback_number}
    for cb in callbacks:
        if cb.number not in expected:
            problems.append(f"unexpected callback {cb.id} to {mask(cb.number)} ({cb.state})")
    lines = ["", "summary: callbacks", *_table(rows), "", "summary: callers", *_table(fates), ""]
    return lines, problems


def _declined_fate(scenario: Scenario, caller: Caller) -> str:
    channel = scenario.ledger.channels.get(caller.name)
    call = scenario.ledger.served(channel) if channel else None
    if call is None:
        problem = f"{caller.name} declined the offer and was never answered by an agent"
        scenario.problems.append(problem)
        return "declined the offer; never reached an agent"
    held = int((call.at - scenario.ledger.joined[caller.name]) * scenario.speed)
    return f"kept holding; answered by {call.agent} after {held // 60}:{held % 60:02d} on hold"


def _callback_fate(cb: Callback, outcomes: list[str], call: AgentCall | None) -> str:
    parts = [f"{o} on attempt {i}" for i, o in enumerate(outcomes, 1) if o != "connected"]
    if cb.state is not State.CONNECTED:
        return "; ".join([*parts, f"callback {cb.state.value}"])
    parts.append(f"called back at {mask(cb.number)} on attempt {cb.attempts}")
    parts.append(f"talked to {call.agent}" if call else "never reached an agent")
    return "; ".join(parts)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip
