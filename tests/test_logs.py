"""Tests of structured logging: key=value rendering, quoting, request ids and tracebacks."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from trioshop import events
from trioshop.logs import KeyValueFormatter, event_field, event_pattern, log_event, request_id


class Captured:
    """A logger whose records go through KeyValueFormatter into a string buffer."""

    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger = logger
        self.stream = stream

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def only_line(self) -> str:
        lines = self.lines()
        assert len(lines) == 1, lines
        return lines[0]


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[Captured]:
    """A fresh non-propagating logger formatting into a buffer, removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(f"tests.logs.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield Captured(logger, stream)
    finally:
        logger.removeHandler(handler)


def fields_of(line: str) -> str:
    """The part of *line* after the fixed ``ts level logger event`` prefix."""
    match = re.fullmatch(r"ts=\S+ level=\S+ logger=\S+ event=(\"(?:[^\"\\]|\\.)*\"|\S+)(.*)", line)
    assert match is not None, line
    return match.group(2).removeprefix(" ")


def log(captured: Captured, **fields: Any) -> str:
    """Log *fields* on an ``evt`` event and return the rendered fields part."""
    log_event(captured.logger, "evt", **fields)
    return fields_of(captured.only_line())


def test_prefix_has_timestamp_level_logger_and_event(captured: Captured) -> None:
    """Every line starts with an ISO UTC timestamp, the lower-case level, the logger and event."""
    log_event(captured.logger, "cart created", logging.WARNING)
    line = captured.only_line()
    assert re.fullmatch(
        rf"ts=\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z level=warning "
        rf"logger={re.escape(captured.logger.name)} event=\"cart created\"",
        line,
    ), line


def test_timestamp_uses_record_time_in_utc() -> None:
    """The timestamp is the record's creation time in UTC with milliseconds, per record."""
    formatter = KeyValueFormatter()
    first = logging.makeLogRecord({"msg": "a", "created": 0.0, "msecs": 5.0})
    second = logging.makeLogRecord({"msg": "b", "created": 86_461.25, "msecs": 250.0})
    assert formatter.format(first).startswith("ts=1970-01-01T00:00:00.005Z ")
    assert formatter.format(second).startswith("ts=1970-01-02T00:01:01.250Z ")
    again = logging.makeLogRecord({"msg": "c", "created": 0.5, "msecs": 500.0})
    assert formatter.format(again).startswith("ts=1970-01-01T00:00:00.500Z ")


def test_plain_values_are_not_quoted(captured: Captured) -> None:
    """Words without spaces, quotes, '=' or backslashes are written as they are."""
    assert log(captured, user_id="alice", sku="KB-002", path="/orders/u1") == (
        "user_id=alice sku=KB-002 path=/orders/u1"
    )


def test_numbers_are_unquoted(captured: Captured) -> None:
    """Ints and floats are written bare, in their Python repr."""
    assert log(captured, items=3, total=1799.97, neg=-1, zero=0) == (
        "items=3 total=1799.97 neg=-1 zero=0"
    )


def test_fields_keep_their_order(captured: Captured) -> None:
    """Fields appear in the order they were given."""
    assert log(captured, z=1, a=2, m=3) == "z=1 a=2 m=3"


def test_value_with_space_is_quoted(captured: Captured) -> None:
    """A value with a space is wrapped in double quotes."""
    assert log(captured, title="Laptop Pro 16") == 'title="Laptop Pro 16"'


def test_empty_string_is_quoted(captured: Captured) -> None:
    """An empty value is written as "" so the field is still visible."""
    assert log(captured, reason="") == 'reason=""'


def test_equals_sign_is_quoted(captured: Captured) -> None:
    """A value holding '=' is quoted so it cannot read as another key."""
    assert log(captured, query="a=b") == 'query="a=b"'


def test_double_quotes_are_escaped(captured: Captured) -> None:
    """Double quotes inside a value are backslash-escaped within the quotes."""
    assert log(captured, said='he said "hi"') == r'said="he said \"hi\""'


def test_backslashes_are_escaped(captured: Captured) -> None:
    """Backslashes are doubled, so an escaped quote cannot be faked."""
    assert log(captured, path="C:\\shop") == r'path="C:\\shop"'
    captured.stream.truncate(0)
    captured.stream.seek(0)
    assert log(captured, tricky='\\"') == r'tricky="\\\""'


def test_newlines_are_escaped_and_event_stays_on_one_line(captured: Captured) -> None:
    """A value with newlines is quoted with \\n escapes; the event is one line."""
    log_event(captured.logger, "multi\nline event", note="first\nsecond\n")
    line = captured.only_line()
    assert 'event="multi\\nline event"' in line
    assert line.endswith('note="first\\nsecond\\n"')


def test_non_string_values_use_str(captured: Captured) -> None:
    """Other values are written through str() and quoted when that needs it."""
    assert log(captured, missing=None, flag=True, items=("a", "b")) == (
        "missing=None flag=True items=\"('a', 'b')\""
    )


def test_event_is_quoted_like_a_value(captured: Captured) -> None:
    """A one-word event is bare; an event with spaces is quoted."""
    log_event(captured.logger, "started")
    log_event(captured.logger, "shop started")
    first, second = captured.lines()
    assert first.endswith(" event=started")
    assert second.endswith(' event="shop started"')


@pytest.mark.parametrize("event", [events.LISTENING, events.CART_CREATED, 'say "hi" = \\'])
def test_event_pattern_matches_the_printed_line(captured: Captured, event: str) -> None:
    """event_pattern finds an event's line as printed, bare or quoted, and not another's."""
    log_event(captured.logger, event, pid=7)
    log_event(captured.logger, event + " later", pid=8)
    pattern = event_pattern(event, r" pid=(\d+)")
    assert [m.group(1) for line in captured.lines() if (m := pattern.search(line))] == ["7"]
    assert event_field(event) in captured.lines()[0]


def test_below_level_logs_nothing(captured: Captured) -> None:
    """An event below the logger's level is not written."""
    captured.logger.setLevel(logging.WARNING)
    log_event(captured.logger, "noise", logging.INFO, n=1)
    assert captured.lines() == []


def test_request_id_added_when_set(captured: Captured) -> None:
    """With the request_id context variable set, the event carries request_id= first."""
    token = request_id.set("req-42")
    try:
        log_event(captured.logger, "evt", user_id="alice")
    finally:
        request_id.reset(token)
    assert fields_of(captured.only_line()) == "request_id=req-42 user_id=alice"


def test_request_id_absent_when_not_set(captured: Captured) -> None:
    """Without a request id, no request_id field is written."""
    assert request_id.get() is None
    log_event(captured.logger, "evt", user_id="alice")
    line = captured.only_line()
    assert "request_id=" not in line
    assert fields_of(line) == "user_id=alice"


def test_request_id_read_at_log_time() -> None:
    """The request id is captured when logged, not when the record is formatted later."""
    logger = logging.getLogger("tests.logs.deferred")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        token = request_id.set("req-7")
        try:
            log_event(logger, "evt")
        finally:
            request_id.reset(token)
    finally:
        logger.removeHandler(handler)
    assert request_id.get() is None
    assert KeyValueFormatter().format(records[0]).endswith(" event=evt request_id=req-7")


def test_traceback_stays_on_one_line(captured: Captured) -> None:
    """An exception's traceback follows as one quoted exc= field with escaped newlines."""
    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError as error:
        log_event(captured.logger, "actor crashed", logging.ERROR, exc_info=error, pid=7)
    line = captured.only_line()
    assert " level=error " in line
    assert ' event="actor crashed" pid=7 exc="Traceback (most recent call last):\\n' in line
    assert line.endswith('ValueError: bad \\"value\\"\\nsecond line"')
    assert "test_traceback_stays_on_one_line" in line


def test_no_exc_field_without_exception(captured: Captured) -> None:
    """Without exc_info no exc= field is written."""
    log_event(captured.logger, "evt", n=1)
    assert "exc=" not in captured.only_line()


def test_records_of_other_libraries_render_their_message() -> None:
    """A record not made by log_event renders its %-formatted message as the event, no fields."""
    record = logging.LogRecord(
        "hypercorn.error", logging.INFO, __file__, 1, "Running on %s (%s)", ("x:1", "h11"), None
    )
    line = KeyValueFormatter().format(record)
    assert line.endswith(' level=info logger=hypercorn.error event="Running on x:1 (h11)"')


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("/api/\x1b[31mred", r'"/api/\x1b[31mred"'),
        ("a\rb", r'"a\rb"'),
        ("a\r\nb", r'"a\r\nb"'),
        ("tab\there", r'"tab\there"'),
        ("nul\x00", r'"nul\x00"'),
        ("del\x7f", r'"del\x7f"'),
        ("next\x85line", r'"next\x85line"'),
        ("sep\u2028arator", r'"sep\u2028arator"'),
    ],
)
def test_control_characters_are_escaped(captured: Captured, raw: str, escaped: str) -> None:
    """Control and line-breaking characters from a client are escaped, never written raw."""
    assert log(captured, path=raw) == f"path={escaped}"
    assert captured.only_line().isprintable()
