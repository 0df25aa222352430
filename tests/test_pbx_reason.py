"""Real PBX: the caller picks a reason; the agent hears it before the bridge; reports count it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from callback_ari.models import State
from callback_ari.sim.sandbox import Harness, Sandbox
from tests.harness import REPO, running_service, store_for, wait_for_callback
from tests.test_pbx_abandon import PREFIX, QUEUE, sandbox_config
from tests.test_pbx_position import plays

pytestmark = pytest.mark.asterisk

REASONS = "1:billing=sound:auth-thankyou, 2:technical=sound:tt-monkeys, 3:other"


async def test_reason_is_stored_whispered_before_agent_connect_and_reported(
    pbx: Harness, sandbox: Sandbox, redis_url: str, tmp_path: Path
) -> None:
    await pbx.device("agent1", "INUSE")
    await pbx.device("agent2", "INUSE")
    await pbx.set_global("AGENT_TALK", "2")
    queue = {**QUEUE, "on_abandon": "off", "offer_threshold": "2", "withdraw": "yes",
             "reasons": REASONS}  # fmt: skip
    config = sandbox_config(sandbox, redis_url, queue)
    client, store = await store_for(redis_url, PREFIX)
    try:
        async with running_service(config):
            mark, mark_ami = len(pbx.watch.ari), len(pbx.watch.ami)
            caller = await pbx.call_in("2125551501")
            side = caller + "-pbx"
            async with asyncio.timeout(30):
                await pbx.wait_ari(lambda e: plays(e, side, "vm-press"), since=mark)
                await pbx.press(caller, "1")  # yes, call me back
                await pbx.wait_ari(lambda e: plays(e, side, "if-correct-press"), since=mark)
                await pbx.press(caller, "1")  # that number is right
                await pbx.wait_ari(lambda e: plays(e, side, "tt-monkeys"), since=mark)
                await pbx.press(caller, "2")  # technical
                found = await wait_for_callback(store, lambda cbs: len(cbs) == 1)
            cb = found[0]
            assert (cb.number, cb.reason) == ("2125551501", "technical")
            # an agent frees up: the customer is called, presses 1 and joins the queue; the
            # member's channel plays the whisper before app_queue reports AgentConnect
            await pbx.device("agent1", "NOT_INUSE")
            channel = f"cb-{cb.id}-a1"
            async with asyncio.timeout(30):
                whisper = await pbx.wait_ami(
                    lambda m: (
                        m.get("Event") == "Newexten"
                        and m.get("Application") == "Playback"
                        and "agent1@agents" in m.get("Channel", "")
                    ),
                    since=mark_ami,
                )
                connect = await pbx.wait_ami(
                    lambda m: m.get("Event") == "AgentConnect" and m.get("Uniqueid") == channel,
                    since=mark_ami,
                )
                await wait_for_callback(store, lambda cbs: cbs[0].state is State.CONNECTED)
            assert whisper["AppData"] == "callback-announce&tt-monkeys"
            assert whisper["Context"] == "callback-whisper"
            assert float(whisper["_t"]) < float(connect["_t"])
    finally:
        await client.aclose()
    # the operator's report, as a separate process reading Redis
    conf = tmp_path / "callback_ari.conf"
    conf.write_text(sandbox.service_config(redis_url, queue=queue).replace(
        "[redis]\n", f"[redis]\nprefix = {PREFIX}\n"))  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callback_ari", "-c", str(conf), "report", "--by", "reason",
        "--json", cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    rows = {row["queue"]: row for row in json.loads(out)["queues"]}
    assert rows["technical"]["requested"] == 1
    assert rows["technical"]["finished"] == {"connected": 1}
