"""Playbacks (queued per channel, timed by the sound catalog), recordings and DTMF of the fake."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from callback_ari.sim.simpbx.model import Channel, Playback
from callback_ari.sim.simpbx.pbx import AriFailure, Pbx
from callback_ari.sim.simpbx.sounds import media_duration

DTMF_DURATION_MS = 100
DTMF_BETWEEN_MS = 100


@dataclass
class LiveRecording:
    """POST /channels/{id}/record in progress: ends on its time limit, the terminating key
    or the channel's hang-up, and is then stored under its name."""

    name: str
    fmt: str
    channel: Channel
    terminate_on: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self, state: str) -> dict[str, object]:
        return {"name": self.name, "format": self.fmt, "state": state,
                "target_uri": f"channel:{self.channel.id}"}  # fmt: skip


class Media:
    """Plays media on channels and moves DTMF between them."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.live: dict[str, LiveRecording] = {}  # channel id -> its recording

    # --- recording -----------------------------------------------------------------------

    def record(
        self, ch: Channel, name: str, fmt: str, max_s: int, terminate_on: str, if_exists: str
    ) -> LiveRecording:
        """POST /record: 201, RecordingStarted; 409 if the name is taken and may not be."""
        if ch.id in self.live or any(r.name == name for r in self.live.values()):
            raise AriFailure(409, "Conflict", "Recording already in progress")
        if name in self.pbx.stored_recordings and if_exists == "fail":
            raise AriFailure(409, "Conflict", "Recording already exists")
        if fmt not in ("wav", "gsm", "ulaw", "alaw", "sln"):
            raise AriFailure(422, "Unprocessable Entity", "Unknown format")
        rec = LiveRecording(name, fmt, ch, terminate_on)
        self.live[ch.id] = rec
        self.pbx.stasis.emit("RecordingStarted", [ch], {"recording": rec.to_json("recording")})
        self.pbx.spawn(self._recording(rec, max_s))
        return rec

    async def _recording(self, rec: LiveRecording, max_s: int) -> None:
        try:
            async with asyncio.timeout(self.pbx.seconds(max_s) if max_s > 0 else None):
                await rec.stop.wait()
        except TimeoutError:
            pass
        self._store(rec)

    def _store(self, rec: LiveRecording) -> None:
        if self.live.get(rec.channel.id) is not rec:
            return
        del self.live[rec.channel.id]
        self.pbx.stored_recordings[rec.name] = rec.fmt
        self.pbx.stasis.emit("RecordingFinished", [rec.channel], {"recording": rec.to_json("done")})

    # --- playback ------------------------------------------------------------------------

    def play(self, ch: Channel, media: list[str], playback_id: str | None, lang: str) -> Playback:
        """POST /play: queued now, PlaybackStarted when it reaches the head of the channel."""
        pb = Playback(playback_id or str(uuid.uuid4()), ch, media, lang or ch.language)
        self.pbx.playbacks[pb.id] = pb
        ch.pending_playbacks.append(pb)
        if ch.playback_task is None:
            ch.playback_task = self.pbx.spawn(self._worker(ch))
        return pb

    def get(self, playback_id: str) -> Playback:
        """A playback still queued or playing, else 404."""
        pb = self.pbx.playbacks.get(playback_id)
        if pb is None:
            raise AriFailure(404, "Not Found", "Playback not found")
        return pb

    def stop(self, playback_id: str) -> None:
        """DELETE /playbacks/{id}: a playing one finishes 'done'; a queued one is dropped."""
        pb = self.get(playback_id)
        if pb.state == "queued":
            pb.channel.pending_playbacks.remove(pb)
            self.pbx.playbacks.pop(pb.id, None)
            return
        pb.stop.set()

    def _publish(self, pb: Playback, kind: str) -> None:
        self.pbx.stasis.emit(kind, [pb.channel], {"playback": pb.to_json()})

    async def _worker(self, ch: Channel) -> None:
        try:
            while ch.pending_playbacks and ch.alive:
                pb = ch.pending_playbacks.pop(0)
                ch.playing.append(pb)
                await self._play_one(pb)
                if pb in ch.playing:
                    ch.playing.remove(pb)
                self.pbx.playbacks.pop(pb.id, None)
        finally:
            if ch.playback_task is asyncio.current_task():
                ch.playback_task = None

    async def _play_one(self, pb: Playback) -> None:
        for index, uri in enumerate(pb.media):
            pb.index = index
            pb.state = "playing"
            self._publish(pb, "PlaybackStarted")
            last = index == len(pb.media) - 1
            duration = media_duration(uri)
            if duration is None:
                pb.state = "failed" if last else "continuing"
                self._publish(pb, "PlaybackFinished" if last else "PlaybackContinuing")
                continue
            try:
                async with asyncio.timeout(self.pbx.seconds(duration)):
                    await pb.stop.wait()
            except TimeoutError:
                pass
            if pb.stop.is_set() or last:
                pb.state = "done"
                self._publish(pb, "PlaybackFinished")
                return
            pb.state = "continuing"
            self._publish(pb, "PlaybackContinuing")

    def fail_playbacks(self, ch: Channel) -> None:
        """The channel hung up: the playing media ends 'failed', queued ones vanish, a
        recording is stored as far as it got."""
        rec = self.live.get(ch.id)
        if rec is not None:
            self._store(rec)
        for pb in list(ch.playing):
            ch.playing.remove(pb)
            pb.state = "failed"
            self._publish(pb, "PlaybackFinished")
            self.pbx.playbacks.pop(pb.id, None)
        for pb in ch.pending_playbacks:
            self.pbx.playbacks.pop(pb.id, None)
        ch.pending_playbacks.clear()
        task = ch.playback_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            ch.playback_task = None

    # --- DTMF ------------------------------------------------------------------------------

    def dtmf_received(self, ch: Channel, digit: str, duration_ms: int) -> None:
        """A digit arrives on a channel: ChannelDtmfReceived, and Queue() may exit on it."""
        if not ch.alive:
            return
        self.pbx.emit("ChannelDtmfReceived", ch, {"digit": digit, "duration_ms": duration_ms})
        rec = self.live.get(ch.id)
        if rec is not None and (rec.terminate_on == "any" or rec.terminate_on == digit):
            rec.stop.set()
        if ch.in_queue is not None:
            self.pbx.queues.on_digit(ch, digit)

    def send_dtmf(
        self,
        ch: Channel,
        digits: str,
        *,
        before_ms: int = 0,
        between_ms: int = DTMF_BETWEEN_MS,
        duration_ms: int = DTMF_DURATION_MS,
    ) -> None:
        """POST /dtmf on a channel: the digits come out of its Local peer, one per 200 ms."""
        target = ch.peer if ch.peer is not None else None
        if target is None:
            return  # a trunk call: the far end hears the digits, nobody sees them
        self.pbx.spawn(self._send(target, digits, before_ms, between_ms, duration_ms))

    async def _send(
        self, target: Channel, digits: str, before_ms: int, between_ms: int, duration_ms: int
    ) -> None:
        await self.pbx.sleep(before_ms / 1000)
        for digit in digits:
            await self.pbx.sleep((duration_ms + between_ms) / 1000)
            if not target.alive:
                return
            self.dtmf_received(target, digit, duration_ms)
