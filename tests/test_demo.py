"""`callback-ari demo`: the scripted flow connects every callback and prints a summary."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from callback_ari.cli import app as cli
from callback_ari.logs import reset_logging
from callback_ari.masking import mask
from callback_ari.sim.demo import run_demo
from callback_ari.sim.demo_script import Choice, make_cast

pytestmark = pytest.mark.slow  # the whole demo, twice: ~15 s

FAST = 50.0


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()  # the CLI configures structlog globally


def summary_row(out: str, name: str, section: str) -> str:
    """The summary line of ``name`` in the "summary: <section>" table."""
    table = out.split(f"demo: summary: {section}", 1)[1].split("demo: \n", 1)[0]
    rows = [line for line in table.splitlines() if f"  {name}  " in line]
    assert len(rows) == 1, f"{name} in {section}: {rows}"
    return rows[0]


def test_demo_connects_every_callback_and_serves_the_declined_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = run_demo(speed=FAST, seed=7)
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert "demo: OK: 3 of 3 callbacks connected" in out
    cast = {c.name: c for c in make_cast(7)}

    alice = summary_row(out, "Alice Johnson", "callbacks")
    assert re.search(r"caller ID\s+1\s+connected\s+connected$", alice)
    bob = summary_row(out, "Bob Martinez", "callbacks")
    assert re.search(r"caller ID\s+2\s+busy, connected\s+connected$", bob)
    carol = summary_row(out, "Carol Nguyen", "callbacks")
    assert re.search(r"keyed number\s+1\s+connected\s+connected$", carol)
    # Carol is called on the number she keyed, not her caller ID; numbers are masked
    keyed = cast["Carol Nguyen"].keyed
    assert mask(keyed) in carol and keyed not in out
    assert cast["Carol Nguyen"].choice is Choice.OTHER_NUMBER

    dave = summary_row(out, "Dave Patel", "callers")
    assert re.search(r"declined\s+kept holding; answered by agent\d after \d+:\d\d on hold", dave)
    assert "busy on attempt 1" in summary_row(out, "Bob Martinez", "callers")
    # the narration and the service's own logs share the screen
    assert "demo: [" in out and "callback.dialing" in out


def test_cli_demo_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--speed", "50"]) == 0, capsys.readouterr().out[-3000:]


def test_demo_without_redis_server_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert run_demo(speed=FAST) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install -y redis-server" in err[0]
