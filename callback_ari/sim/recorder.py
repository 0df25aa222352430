"""Records the project's Asterisk ground truth from the real sandbox PBX.

    python -m callback_ari.sim.recorder OUTDIR [FILE ...]

starts the sandbox instance named by CBPBX_* with the recorder's own config (below, laid over
the instance through CBPBX_EXTRA), and writes into OUTDIR what Asterisk sent and answered:

- ``offer_flow.jsonl``: a caller times out of Queue(support) into Stasis(callback-ari,offer,...)
  and the app plays prompts, collects DTMF and continues / hangs up / is hung up on;
- ``originate_outcomes.jsonl``: POST /channels as callback-ari: answered, busy, congestion,
  invalid extension, no answer, duplicate ids, generated ids;
- ``ws_disconnect.jsonl``: the callback-ari websocket dropped, closed and replaced;
- ``ami_queue.txt``: raw AMI, Parts A-M (see ``recorder_ami.py``; the ARI files are
  ``recorder_ari.py``'s);
- ``ari_models.json``: the ARI data models (names, property types, required flags, event
  subtypes) derived from the PBX's own api-docs, which also regenerate the fake's route table
  ``callback_ari/sim/simpbx/ari22_routes.json`` (Asterisk's documents themselves are never kept);
- ``version.txt``: ``core show version`` of the PBX that answered.

Each file gets a freshly started Asterisk. The formats are described in
tests/data/asterisk-22/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from callback_ari.sim.recorder_ami import SECRET as AMI_SECRET
from callback_ari.sim.recorder_ami import USER as AMI_USER
from callback_ari.sim.recorder_ami import record_ami
from callback_ari.sim.recorder_ari import (
    PASSWORD,
    USER,
    record_offer_flow,
    record_originate_outcomes,
    record_ws_disconnect,
)
from callback_ari.sim.recording import RecordingError, fetch_api_docs
from callback_ari.sim.sandbox import Sandbox
from callback_ari.sim.simpbx import spec

MODELS_FILE = "ari_models.json"


EXTENSIONS = """\
[general]
static=yes
writeprotect=yes
[globals]
CB_WAIT=5
[incoming]
exten => support,1,Answer()
 same => n,Queue(support,,,,${CB_WAIT})
 same => n,GotoIf($["${QUEUESTATUS}" = "TIMEOUT"]?offer)
 same => n,Hangup()
 same => n(offer),Stasis(callback-ari,offer,support)
 same => n,Hangup()
; used by ws_disconnect: shows STASISSTATUS after Stasis() returns
exten => stasisprobe,1,Answer()
 same => n,Stasis(callback-ari,probe)
 same => n,Set(GLOBAL(LAST_STASISSTATUS)=${STASISSTATUS})
 same => n,UserEvent(StasisProbe,Status: ${STASISSTATUS})
 same => n,Wait(1)
 same => n,Hangup()
[agents]
exten => agent1,1,Answer()
 same => n,Echo()
exten => agent2,1,Answer()
 same => n,Echo()
[customers]
exten => _5551XXX,1,Answer()
 same => n,Wait(2)
 same => n,SendDTMF(1)
 same => n,Wait(30)
 same => n,Hangup()
exten => _5552XXX,1,Busy(5)
exten => _5553XXX,1,Wait(120)
exten => _5554XXX,1,Congestion(5)
; target of POST /channels/{id}/continue after an answered callback
[callback-queue]
exten => support,1,Set(QUEUE_PRIO=10)
 same => n,Queue(support)
 same => n,Hangup()
; AMI scenario: a caller waiting in the queue; reports what the dialplan sees
[qcaller]
exten => join,1,Answer()
 same => n,Queue(support)
 same => n,UserEvent(QueueResult,QueueStatus: ${QUEUESTATUS},WithdrawInfo: ${QUEUE_WITHDRAW_INFO})
 same => n,Hangup()
; same, but Queue option c: caller continues in the dialplan when the agent hangs up
exten => joinc,1,Answer()
 same => n,Queue(support,c)
 same => n,UserEvent(QueueResult,QueueStatus: ${QUEUESTATUS},WithdrawInfo: ${QUEUE_WITHDRAW_INFO})
 same => n,Hangup()
"""

QUEUES = """\
[general]
persistentmembers = no
shared_lastcall = yes
[support]
strategy = rrmemory
timeout = 15
retry = 1
wrapuptime = 0
joinempty = yes
leavewhenempty = no
ringinuse = no
member => Local/agent1@agents/n,0,Agent One,Custom:agent1
member => Local/agent2@agents/n,0,Agent Two,Custom:agent2
"""

ARI_CONF = f"""\
[general]
enabled = yes
pretty = no
[{USER}]
type = user
read_only = no
password = {PASSWORD}
"""


def manager_conf(port: int) -> str:
    return (
        f"[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n"
        f"[{AMI_USER}]\nsecret = {AMI_SECRET}\ndeny = 0.0.0.0/0.0.0.0\n"
        "permit = 127.0.0.1/255.255.255.255\nread = all\nwrite = all\n"
    )


def write_config(box: Sandbox, folder: Path) -> None:
    """The recorder's config, laid over the sandbox's own (CBPBX_EXTRA replaces whole files)."""
    (folder / "extensions.conf").write_text(EXTENSIONS)
    (folder / "queues.conf").write_text(QUEUES)
    (folder / "ari.conf").write_text(ARI_CONF)
    (folder / "manager.conf").write_text(manager_conf(box.ami_port))


# -- the ARI spec, derived ------------------------------------------------------------------
ROUTES = Path(spec.__file__).with_name(spec.ROUTES_FILE)


def dump(data: Any) -> str:
    return json.dumps(data, indent=1) + "\n"


async def record_spec(box: Sandbox, out: Path) -> None:
    """The fake's route table and the tests' model extract, derived from the live api-docs."""
    docs = await fetch_api_docs(box.ari_url, USER, PASSWORD)
    ROUTES.write_text(dump(spec.generate_from(docs)))
    (out / MODELS_FILE).write_text(dump(spec.extract_models(docs)))


# -- the whole recording -------------------------------------------------------------------
STEPS: dict[str, Callable[[Sandbox, Path], Awaitable[None]]] = {
    "offer_flow.jsonl": record_offer_flow,
    "originate_outcomes.jsonl": record_originate_outcomes,
    "ws_disconnect.jsonl": record_ws_disconnect,
    "ami_queue.txt": record_ami,
}


async def record(box: Sandbox, out: Path, names: list[str]) -> None:
    """Each file on a freshly started PBX; then the derived spec data and the version."""
    with tempfile.TemporaryDirectory(prefix="cbrec-") as tmp:
        extra = Path(tmp)
        write_config(box, extra)
        for name in names:
            await asyncio.to_thread(box.start, extra)
            started = time.monotonic()
            await STEPS[name](box, out / name)
            print(f"recorder: {name} in {time.monotonic() - started:.1f} s", file=sys.stderr)
        if not names:
            await asyncio.to_thread(box.start, extra)
        await record_spec(box, out)
        version = await asyncio.to_thread(box.cli, "core show version")
        (out / "version.txt").write_text(version.strip() + "\n")
    await asyncio.to_thread(box.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m callback_ari.sim.recorder",
        description="Record ARI/AMI ground truth from the sandbox PBX named by CBPBX_*.",
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "files", nargs="*", metavar="FILE",
        help=f"record only these ({', '.join(STEPS)}); the ARI models and version always",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [name for name in args.files if name not in STEPS]
    if unknown:
        parser.error(f"unknown FILE {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    box = Sandbox.from_env()
    reason = box.unavailable()
    if reason is not None:
        print(f"recorder: {reason}", file=sys.stderr)
        return 1
    args.outdir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(record(box, args.outdir, args.files or list(STEPS)))
    except RecordingError as exc:
        print(f"recorder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
