"""Throughput of ARI event decode+dispatch and AMI parsing on one core, from recorded traffic.

Run: /work/venv/bin/python benchmarks/events_bench.py [--events 200000] [--batch 1000]

ARI: every event Asterisk 22 sent in tests/data/asterisk-22/*.jsonl, re-serialised
as the compact JSON text frames Asterisk sends (ari.conf pretty = no), repeated to --events
and pushed through ``ari_ws.decode_frame`` plus a dispatch by ``channel_id`` (what the
service does per frame). The floor is ``json.loads`` alone on the same frames in the same
run, so the ratio shows what decoding adds on top of unavoidable JSON parsing.

AMI: the RECV blocks of ami_queue.txt turned back into CRLF wire bytes, repeated, and fed to
``ami_protocol.AmiParser`` in 4 KiB reads. Its floor is splitting the same bytes into
messages (``bytes.split(b"\\r\\n\\r\\n")``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from callback_ari.asterisk.ari_events import AriEvent
from callback_ari.asterisk.ari_ws import decode_frame

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "tests" / "data" / "asterisk-22"
ARI_TARGET = 20_000
AMI_TARGET = 50_000
READ_SIZE = 4096


def ari_frames(count: int) -> list[str]:
    frames = []
    for path in sorted(RECORDINGS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["dir"] == "event":
                frames.append(json.dumps(item["event"], separators=(",", ":")))
    return [frames[i % len(frames)] for i in range(count)]


def ami_stream(min_messages: int) -> tuple[bytes, int]:
    """The server side of ami_queue.txt as wire bytes, repeated; (bytes, message count)."""
    messages: list[bytes] = []
    block: list[str] | None = None
    for line in (RECORDINGS / "ami_queue.txt").read_text().splitlines():
        if line.startswith("<<< ") and "RECV" in line and "banner" not in line:
            block = []
        elif block is not None and line == "":
            if block:
                messages.append(("\r\n".join(block) + "\r\n\r\n").encode())
            block = None
        elif block is not None and not line.startswith(("(EOF)", "### ")):
            block.append(line)
    once = b"".join(messages)
    repeat = -(-min_messages // len(messages))
    return once * repeat, len(messages) * repeat


def timed_batches(batches: Sequence[Sequence[object]], work: Callable[[object], int]) -> list[int]:
    """Nanoseconds per batch (``work`` returns how many items it produced, checked by caller)."""
    out = []
    clock = time.perf_counter_ns
    for batch in batches:
        start = clock()
        for item in batch:
            work(item)
        out.append(clock() - start)
    return out


def row(name: str, items: int, per_batch: list[int], batch_items: int,
        floor_ns: int, target: int) -> list[str]:  # fmt: skip
    total_s = sum(per_batch) / 1e9
    rate = items / total_s
    median_ms = statistics.median(per_batch) / 1e6
    p99_ms = sorted(per_batch)[min(len(per_batch) - 1, int(len(per_batch) * 0.99))] / 1e6
    floor_rate = items / (floor_ns / 1e9)
    return [
        name, f"{items:,}", f"{batch_items:,}", f"{total_s:.3f}", f"{rate:,.0f}",
        f"{median_ms:.3f}", f"{p99_ms:.3f}", f"{floor_rate:,.0f}", f"{floor_rate / rate:.2f}x",
        f"{target:,}", "PASS" if rate >= target else "FAIL",
    ]  # fmt: skip


def bench_ari(count: int, batch: int) -> list[str]:
    frames = ari_frames(count)
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    routed: dict[str | None, int] = {}

    def dispatch(event: AriEvent) -> None:  # what service._on_ari_event does first: route
        cid = event.channel_id
        routed[cid] = routed.get(cid, 0) + 1

    def decode_and_dispatch(frame: object) -> int:
        event = decode_frame(frame)  # type: ignore[arg-type]
        if event is None:
            raise SystemExit(f"recorded frame did not decode: {frame!r:.200}")
        dispatch(event)
        return 1

    def floor(frame: object) -> int:
        json.loads(frame)  # type: ignore[arg-type]
        return 1

    gc.collect()
    floor_ns = sum(timed_batches(batches, floor))
    gc.collect()
    per_batch = timed_batches(batches, decode_and_dispatch)
    assert sum(routed.values()) == count
    return row("ARI decode+dispatch", count, per_batch, batch, floor_ns, ARI_TARGET)


def bench_ami(min_messages: int) -> list[str] | None:
    try:
        from callback_ari.asterisk.ami_protocol import AmiParser
    except ImportError:
        return None
    data, messages = ami_stream(min_messages)
    reads = [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]
    per_batch_reads = 64  # 256 KiB per timed batch
    batches = [reads[i : i + per_batch_reads] for i in range(0, len(reads), per_batch_reads)]
    parser = AmiParser(expect_banner=False)
    parsed = 0

    def feed(chunk: object) -> int:
        nonlocal parsed
        n = len(parser.feed(chunk))  # type: ignore[arg-type]
        parsed += n
        return n

    def floor(chunk: object) -> int:
        return len(chunk.split(b"\r\n\r\n"))  # type: ignore[attr-defined]

    gc.collect()
    floor_ns = sum(timed_batches(batches, floor))
    gc.collect()
    per_batch = timed_batches(batches, feed)
    if parsed != messages or parser.bad_messages:
        raise SystemExit(f"AMI: parsed {parsed} of {messages}, {parser.bad_messages} bad")
    avg = messages // len(batches)
    return row("AMI parse", messages, per_batch, avg, floor_ns, AMI_TARGET)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    # Rejections would log; recorded traffic must not produce any, and logging is not measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rows = [bench_ari(args.events, args.batch)]
    ami = bench_ami(args.events)
    if ami is not None:
        rows.append(ami)
    header = ["section", "items", "batch", "total s", "items/s", "median ms/batch",
              "p99 ms/batch", "floor items/s", "time vs floor", "target/s", "result"]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"python {sys.version.split()[0]}, one core, floor = json.loads (ARI) / split (AMI)")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    if ami is None:
        print("AMI: callback_ari.asterisk.ami_protocol.AmiParser not importable: section skipped")
    return 0 if all(r[-1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
