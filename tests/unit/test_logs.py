"""Log lines: our own events and stdlib records (uvicorn, SQLAlchemy) both come out as one JSON
object per line on stderr, with the level, a UTC timestamp and secrets scrubbed; below the
configured level nothing is written."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from app.logs import configure_logging, get_logger


def lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_an_event_is_one_json_line_with_level_and_utc_time(capsys):
    configure_logging("INFO", json_lines=True)
    get_logger("simwire.test").info("request", method="POST", path="/v1/quotes", status=200)
    (line,) = lines(capsys.readouterr().err)
    assert line["event"] == "request"
    assert (line["method"], line["path"], line["status"], line["level"]) == (
        "POST",
        "/v1/quotes",
        200,
        "info",
    )
    assert datetime.fromisoformat(line["timestamp"]).utcoffset().total_seconds() == 0


def test_values_json_cannot_hold_are_written_as_their_repr_and_text_stays_text(capsys):
    configure_logging("INFO", json_lines=True)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    get_logger("simwire.test").info("probe", thing=Opaque(), text='café ☕ "quoted"\n')
    (line,) = lines(capsys.readouterr().err)
    assert line["thing"] == "<opaque>"
    assert line["text"] == 'café ☕ "quoted"\n'


def test_below_the_level_nothing_is_written_and_errors_carry_their_traceback(capsys):
    configure_logging("INFO", json_lines=True)
    log = get_logger("simwire.test")
    log.debug("too_detailed", n=1)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        log.error("failed", exc_info=exc)
    (line,) = lines(capsys.readouterr().err)
    assert line["event"] == "failed" and line["level"] == "error"
    assert "ValueError: boom" in line["exception"]


def test_stdlib_records_come_out_the_same_way_scrubbed(capsys):
    configure_logging("INFO", json_lines=True)
    token = "sw_dev_" + "ab" * 16
    logging.getLogger("uvicorn.error").warning("socket from %s closed: ?token=%s", "1.2.3.4", token)
    (line,) = lines(capsys.readouterr().err)
    assert line["level"] == "warning"
    assert line["event"].startswith("socket from 1.2.3.4 closed")
    assert token not in line["event"]
