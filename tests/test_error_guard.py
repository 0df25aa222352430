"""The autouse guard in conftest.py fails a test that logged an error it did not expect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INNER = """
import logging

import pytest
import structlog
from structlog.testing import capture_logs

log = structlog.get_logger("inner")


def test_handler_error_fails():
    log.error("ari.handler_error", event_type="StasisStart")


def test_exception_in_capture_logs_fails():
    with capture_logs():
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("offer.machine_error")


def test_stdlib_error_fails():
    logging.getLogger("asyncio").error("Task exception was never retrieved")


@pytest.mark.expect_errors("ari.handler_error")
def test_declared_error_passes():
    log.error("ari.handler_error", event_type="StasisStart")


@pytest.mark.expect_errors("ari.*")
def test_undeclared_one_still_fails():
    log.error("ari.handler_error")
    log.error("store.corrupt_record")


def test_warnings_pass():
    log.warning("ari.bad_event")
"""


@pytest.mark.slow  # pytest in a subprocess
def test_unexpected_error_events_fail_the_test(tmp_path: Path) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")
    (tmp_path / "conftest.py").write_text(conftest, encoding="utf-8")
    (tmp_path / "test_inner.py").write_text(INNER, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = run.stdout
    assert "ERROR test_inner.py::test_handler_error_fails" in out, out
    assert "ERROR test_inner.py::test_exception_in_capture_logs_fails" in out, out
    assert "ERROR test_inner.py::test_stdlib_error_fails" in out, out
    assert "ERROR test_inner.py::test_undeclared_one_still_fails" in out, out
    assert "'store.corrupt_record'" in out and "PASSED test_inner.py::test_declared" in out, out
    assert "PASSED test_inner.py::test_warnings_pass" in out, out
    assert run.returncode == 1, out
