"""Logging: JSON lines with masked numbers and no secrets; console on request; stdlib routed."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import structlog

from callback_ari.logs import configure_logging, reset_logging, stdout_is_journal


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_masked_numbers_and_redacted_secrets() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = structlog.get_logger("callback_ari.test")
    log.info(
        "callback.stored",
        number="2025551234",
        caller_number="+12025550100",
        callerid=2025550199,
        password="hunter2",
        token="t0k3n",
        url="redis://app:pw123@redis:6379/0",
        headers={"Authorization": "Bearer abc"},
        queue="support",
    )
    (line,) = lines(out)
    text = out.getvalue()
    for secret in ("2025551234", "2025550100", "2025550199", "hunter2", "t0k3n", "pw123", "abc"):
        assert secret not in text
    assert line["event"] == "callback.stored"
    assert line["level"] == "info"
    assert line["number"] == "******1234"
    assert line["caller_number"] == "********0100"
    assert line["password"] == "***" and line["token"] == "***"
    assert line["url"] == "redis://app:***@redis:6379/0"
    assert line["headers"] == {"Authorization": "***"}
    assert line["queue"] == "support"
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_masking_can_be_switched_off_but_secrets_stay_hidden() -> None:
    out = io.StringIO()
    configure_logging("json", mask_numbers=False, stream=out)
    structlog.get_logger().info("offer.number", to="2025551234", secret="s3")
    (line,) = lines(out)
    assert line["to"] == "2025551234"
    assert line["secret"] == "***"


def test_context_variables_are_merged() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    structlog.contextvars.bind_contextvars(callback_id="cb1", channel="PJSIP/x-1")
    structlog.get_logger().warning("callback.retry", attempt=2)
    (line,) = lines(out)
    assert line["callback_id"] == "cb1" and line["channel"] == "PJSIP/x-1"
    assert line["attempt"] == 2 and line["level"] == "warning"


def test_level_filters_debug() -> None:
    out = io.StringIO()
    configure_logging("json", level="info", stream=out)
    log = structlog.get_logger()
    log.debug("noise")
    log.info("signal")
    assert [line["event"] for line in lines(out)] == ["signal"]
    configure_logging("json", level="debug", stream=out)
    log.debug("now.visible")
    assert lines(out)[-1]["event"] == "now.visible"


def test_stdlib_warnings_go_through_the_same_output() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("aiohttp.client").info("chatty")
    logging.getLogger("redis.connection").warning("lost redis://:pw9@r:6379 (%s)", "reset")
    (line,) = lines(out)
    assert line["level"] == "warning"
    assert line["logger"] == "redis.connection"
    assert line["event"] == "lost redis://:***@r:6379 (reset)"


@pytest.mark.expect_errors("service.crashed")
def test_exceptions_are_rendered_in_json() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("service.crashed")
    (line,) = lines(out)
    assert "RuntimeError: boom" in line["exception"]


def test_auto_is_json_when_not_a_tty_and_console_on_request() -> None:
    out = io.StringIO()
    configure_logging("auto", stream=out)
    structlog.get_logger().info("auto.json", number="2025551234")
    assert lines(out)[0]["event"] == "auto.json"

    console = io.StringIO()
    configure_logging("console", stream=console)
    structlog.get_logger().info(
        "ari.connected", app="callback-ari", password="pw", phone="2025551234"
    )
    text = console.getvalue()
    assert "ari.connected" in text and "app=callback-ari" in text
    assert "pw" not in text.replace("password", "") and "2025551234" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        configure_logging("xml")
    with pytest.raises(ValueError):
        configure_logging("json", level="loud")


# --- journald: a syslog priority in front of each line -----------------------------------


def journal_lines(stream: io.StringIO) -> list[tuple[int, dict[str, Any]]]:
    """(priority, JSON body) of every line; fails on a line without the ``<N>`` prefix."""
    out = []
    for line in stream.getvalue().splitlines():
        prefix, sep, body = line.partition(">")
        assert sep and prefix.startswith("<") and prefix[1:].isdigit(), line
        out.append((int(prefix[1:]), json.loads(body)))
    return out


@pytest.mark.expect_errors("a.error", "a.critical", "a.exception", "aiohttp.server: stdlib error")
def test_journal_format_prefixes_each_line_with_its_syslog_priority() -> None:
    stream = io.StringIO()
    configure_logging("journal", "debug", stream=stream)
    log = structlog.get_logger("t")
    log.debug("a.debug")
    log.info("a.info", number="2025551234")
    log.warning("a.warning")
    log.error("a.error", password="hunter2")
    log.critical("a.critical")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("a.exception")
    logging.getLogger("aiohttp.server").error("stdlib %s", "error")
    got = journal_lines(stream)
    assert [(p, body["event"]) for p, body in got] == [
        (7, "a.debug"), (6, "a.info"), (4, "a.warning"), (3, "a.error"), (2, "a.critical"),
        (3, "a.exception"), (3, "stdlib error"),
    ]  # fmt: skip
    # the JSON after the prefix is the same document as without it
    assert got[1][1]["number"] == "******1234"
    assert got[3][1]["password"] == "***"
    assert "ValueError: boom" in got[5][1]["exception"]
    assert "\n" not in stream.getvalue().split("\n", 1)[0]  # one line each, traceback included


@pytest.mark.expect_errors("x.failed")
def test_journal_stream_switches_json_to_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd (JOURNAL_STREAM set) plain JSON gains the prefix; elsewhere it does not."""
    plain = io.StringIO()
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging("json", stream=plain)
    structlog.get_logger().error("x.failed")
    assert json.loads(plain.getvalue())["event"] == "x.failed"
    assert plain.getvalue().startswith("{")

    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    journal = io.StringIO()
    configure_logging("auto", stream=journal)
    structlog.get_logger().error("x.failed")
    assert journal_lines(journal) == [
        (
            3,
            json.loads(plain.getvalue())
            | {"timestamp": json.loads(journal.getvalue().partition(">")[2])["timestamp"]},
        )
    ]

    unit = io.StringIO()  # the shipped systemd unit runs with --log-format json
    configure_logging("json", stream=unit)
    structlog.get_logger().warning("x.slow")
    assert [p for p, _ in journal_lines(unit)] == [4]

    console = io.StringIO()
    configure_logging("console", stream=console)
    structlog.get_logger().error("x.failed")
    assert not console.getvalue().startswith("<")


@pytest.mark.expect_errors("x.failed")
def test_journal_stream_of_another_file_leaves_json_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A child whose stdout was redirected inherits JOURNAL_STREAM; its file is not the journal."""
    with open(tmp_path / "out.log", "w") as f, open(tmp_path / "journal", "w") as journal:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stdout_is_journal(journal)
        assert not stdout_is_journal(f)
        configure_logging("auto", stream=f)
        structlog.get_logger().error("x.failed")
    assert (tmp_path / "out.log").read_text().startswith('{"')
