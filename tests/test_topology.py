"""The site topology helper's plan: which PBX hosts which queue, and its queues.conf."""

from __future__ import annotations

import pytest

from callback_ari.sim.topology import ENV, queues_conf, site_from_env


def test_each_pbx_hosts_the_next_sandbox_queue_by_default() -> None:
    plans = site_from_env({ENV: "x1:28488:25438:24973, x2:28588:25538:25073"})
    assert [(p.name, p.sandbox.ari_port, p.sandbox.agi_port, p.queues) for p in plans] == [
        ("x1", 28488, 24973, ("support",)),
        ("x2", 28588, 25073, ("sales",)),
    ]


def test_default_site_avoids_the_default_sandbox_ports() -> None:
    ports = {port for p in site_from_env({}) for port in (p.sandbox.ari_port, p.sandbox.ami_port)}
    assert ports and not ports & {18088, 15038, 14573}


@pytest.mark.parametrize(
    "spec",
    [
        "x1:1:2:3:support,x2:4:5:6:support",  # one queue on two PBXs: the store keys it by name
        "x1:1:2:3:billing",  # a queue the sandbox's dialplan does not have
        "x1:1:2",  # ports missing
        "x1:1:2:3,x2:4:5:6,x3:7:8:9",  # a third PBX needs its queues spelt out
    ],
)
def test_a_bad_site_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        site_from_env({ENV: spec})


def test_queues_conf_has_only_the_hosted_queues_with_both_agents() -> None:
    text = queues_conf(["sales"])
    assert "[support]" not in text
    assert "[sales]" in text and "#include queues_kit_sales.conf" in text
    assert text.count("member => ") == 2
    assert "strategy = rrmemory" in text and "joinempty = yes" in text
