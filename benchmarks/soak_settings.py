"""Knobs of the soak run (load, agents, faults, timeouts) and the service settings they imply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FAULT_TYPES = ("redis_restart", "ari_drop", "ami_drop", "service_kill", "second_instance")
APP_A = "callback-ari"
APP_B = "callback-ari-b"  # README: a second instance needs its own Stasis app name
PREFIX = "soak"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One simulated queue: its share of the arrivals, its agents and its boost."""

    name: str
    share: float
    agents: int
    priority_boost: int = 0


@dataclass(frozen=True, slots=True)
class SoakSettings:
    """Everything a soak run depends on. Times are wall-clock seconds unless said otherwise.

    The fake PBX runs ``time_scale`` times faster than real time (prompts, ringing, customer
    behaviour), but the service's own timeouts are real seconds, so they are configured short.
    Agent handle times and wrap-up are real seconds too (the soak hangs agents up itself).
    """

    duration: float = 1800.0  # arrivals run this long, then the load drains
    seed: int = 1
    rate: float = 3.5  # inbound calls per second, all queues together
    queues: tuple[QueueSpec, ...] = (
        QueueSpec("support", 0.6, 7, priority_boost=0),
        QueueSpec("sales", 0.4, 5, priority_boost=3),
    )
    handle_mean: float = 2.5  # exponential agent talk time (s)
    wrapup: int = 1  # member wrap-up (s): the fake's queue and the service's wrapup_time
    patience_mean: float = 25.0  # a caller waiting in Queue() hangs up after Exp(mean) s
    persons_per_queue: int = 1500  # distinct customers (each with a caller ID and a 2nd number)
    time_scale: float = 0.1
    faults_per_type: int = 6
    kill_before: float = 0.55  # service SIGKILLs only in this first part (leak window after)
    second_instance_s: tuple[float, float] = (20.0, 45.0)
    drain_timeout: float = 180.0
    sample_interval: float = 5.0
    # service timing (real seconds)
    offer_threshold: int = 1
    dialogue_timeout: int = 30
    lease_seconds: int = 5
    resync_interval: int = 15
    ring_timeout: int = 20  # handed to the fake, which scales it: 2 s of real ringing
    confirm_timeout: int = 2
    retry_interval: int = 2
    max_attempts: int = 3
    log_level: str = "info"
    workdir: Path | None = None
    progress: bool = True

    @property
    def stasis_bound_s(self) -> float:
        """Longest a channel may sit in Stasis: the dialogue timeout plus a restart allowance."""
        return self.dialogue_timeout + 10.0

    def queue(self, name: str) -> QueueSpec:
        return next(q for q in self.queues if q.name == name)


def short_settings(seed: int = 7, workdir: Path | None = None) -> SoakSettings:
    """The CI variant: about a minute of wall time, every fault type once."""
    return SoakSettings(
        duration=40.0,
        seed=seed,
        rate=3.5,
        queues=(
            QueueSpec("support", 0.6, 5, priority_boost=0),
            QueueSpec("sales", 0.4, 4, priority_boost=3),
        ),
        persons_per_queue=400,
        faults_per_type=1,
        kill_before=0.5,
        second_instance_s=(8.0, 12.0),
        drain_timeout=60.0,
        sample_interval=1.0,
        log_level="info",
        workdir=workdir,
        progress=False,
    )
