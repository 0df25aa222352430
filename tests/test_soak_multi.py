"""Short multi-PBX soak: 2 real sandbox PBXs x 2 service instances, one Sentinel set, every fault.

About a minute of callers on both PBXs (each with a customer_first and an agent_first queue) while
the Redis master is SIGKILLed (Sentinel failover), one PBX runs ``core restart now``, an ARI
and an AMI socket are dropped and one instance is SIGKILLed and restarted; then the load
drains and every invariant of ``benchmarks/soak_multi_report.py`` must hold. PBX names and
ports: CBSITE_PBXS (``callback_ari/sim/topology.py``), the first two. The long version:
``python benchmarks/soak.py --topology multi`` (README, Soak).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soak_multi import MultiSettings, run_multi
from soak_multi_faults import FAULT_TYPES
from soak_multi_topology import QueueTiming

from callback_ari.sim.topology import site_from_env

pytestmark = [pytest.mark.asterisk, pytest.mark.slow, pytest.mark.timeout(420)]


async def test_short_multi_pbx_soak_keeps_every_invariant_under_every_fault(
    tmp_path: Path,
) -> None:
    boxes = tuple(plan.sandbox for plan in site_from_env()[:2])
    if (reason := boxes[0].unavailable()) is not None:
        pytest.skip(reason)
    settings = MultiSettings(
        boxes, duration=60.0, rate=1.2, seed=3, faults_per_type=1, patience_mean=8.0,
        drain_timeout=240.0, sample_interval=2.0, workdir=tmp_path, progress=False,
        timing=QueueTiming(max_attempts=2, retry_interval=2),  # a short drain
    )  # fmt: skip
    report = await run_multi(settings)
    text = report.render()
    print(text)

    faults = next(r for r in report.rows if r.check == "every fault injected as planned")
    assert all(f"{kind}=1" in faults.value for kind in FAULT_TYPES), text
    summary = dict(report.summary)
    promised = int(summary["offers heard / confirmations / promised (RouteResult CALLBACK)"]
                   .split(" / ")[2])  # fmt: skip
    assert promised >= 5, text  # the run did something a user would notice
    bridged = summary["attempts seen / bridged to an agent"]
    assert "customer_first 0," not in bridged and not bridged.endswith("agent_first 0"), text
    failing = [row.check for row in report.rows if row.violations and not row.known_issue]
    assert failing == [], text
