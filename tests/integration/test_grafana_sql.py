"""Known answers for tests/support/grafana_sql.py, the stand-in for Grafana's query pipeline.

The expected strings are the expansions listed in shared/FACTS.md (checked against Grafana's
PostgreSQL macro engine) and Grafana's documented variable formatting for SQL data sources.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support.grafana_sql import (
    ALL,
    GrafanaSqlError,
    TimeRange,
    Variable,
    expand_macros,
    go_float,
    go_rfc3339nano,
    interpolate_variables,
    interval_text,
    panel_interval,
    parse_interval,
    render,
)

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = datetime(2018, 4, 12, 19, 0, tzinfo=UTC)
RANGE = TimeRange(FROM, TO)
MINUTE = timedelta(minutes=1)


def test_times_are_written_like_go_rfc3339nano() -> None:
    assert go_rfc3339nano(FROM) == "2018-04-12T18:00:00Z"
    assert go_rfc3339nano(FROM + timedelta(milliseconds=123)) == "2018-04-12T18:00:00.123Z"
    assert go_rfc3339nano(FROM + timedelta(microseconds=500_000)) == "2018-04-12T18:00:00.5Z"
    brasilia = timezone(timedelta(hours=-3))
    assert go_rfc3339nano(datetime(2018, 4, 12, 15, 0, tzinfo=brasilia)) == "2018-04-12T18:00:00Z"


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("$__timeFilter(ts)", "ts BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T19:00:00Z'"),
        ("$__timeGroup(ts,'5m')", "floor(extract(epoch from ts)/300)*300"),
        ("$__timeGroup(ts, '1h')", "floor(extract(epoch from ts)/3600)*3600"),
        ("$__timeGroupAlias(ts,'5m')", 'floor(extract(epoch from ts)/300)*300 AS "time"'),
        ("$__timeGroupAlias(ts, 30s)", 'floor(extract(epoch from ts)/30)*30 AS "time"'),
        ("$__time(ts)", 'ts AS "time"'),
        ("$__timeEpoch(ts)", 'extract(epoch from ts) as "time"'),
        ("$__timeFrom()", "'2018-04-12T18:00:00Z'"),
        ("$__timeTo()", "'2018-04-12T19:00:00Z'"),
        ("$__unixEpochFilter(t)", "t >= 1523556000 AND t <= 1523559600"),
        ("$__unixEpochGroupAlias(t, '1m')", 'floor((t)/60)*60 AS "time"'),
    ],
)
def test_macros_expand_as_grafana_does(macro: str, expected: str) -> None:
    assert expand_macros(macro, RANGE) == expected


def test_time_group_directly_followed_by_a_comma_gets_the_alias_like_before_grafana_5_3() -> None:
    assert expand_macros("SELECT $__timeGroup(ts,'5m'), v", RANGE) == (
        'SELECT floor(extract(epoch from ts)/300)*300 AS "time", v'
    )
    assert expand_macros("GROUP BY $__timeGroup(ts,'5m')", RANGE) == (
        "GROUP BY floor(extract(epoch from ts)/300)*300"
    )


def test_interval_is_plain_text_replaced_before_macros_and_ms_first() -> None:
    sql = "SELECT $__timeGroupAlias(ts, $__interval), $__interval_ms AS ms, $__unixEpochFrom() AS f"
    assert render(sql, time_range=RANGE, interval=MINUTE) == (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time", 60000 AS ms, 1523556000 AS f'
    )


@pytest.mark.parametrize(
    "sql", ["SELECT $__nope(ts)", "SELECT $__timeGroup(ts)", "SELECT $__timeFilter()", "SELECT $x(1)"]
)
def test_unknown_or_incomplete_macros_are_errors(sql: str) -> None:
    with pytest.raises(GrafanaSqlError):
        expand_macros(sql, RANGE)


def test_anything_left_after_expansion_fails() -> None:
    with pytest.raises(GrafanaSqlError, match=r"\$backend"):
        render("SELECT 1 WHERE b IN ($backend)", time_range=RANGE, interval=MINUTE)
    with pytest.raises(GrafanaSqlError, match=r"\$__timeFrom"):
        render("SELECT $__timeFrom", time_range=RANGE, interval=MINUTE)


MULTI = Variable("backend", multi=True, include_all=True, options=("a100", "rtx4090"))
SENTINEL = Variable("backend", multi=True, include_all=True, all_value="'__all'", options=("a100", "rtx4090"))


def test_multi_values_are_single_quoted_comma_separated_with_quotes_doubled() -> None:
    sql = "b IN ($backend)"
    assert (
        interpolate_variables(sql, {"backend": MULTI}, {"backend": ["a100", "o'neil"]})
        == "b IN ('a100','o''neil')"
    )
    assert interpolate_variables(sql, {"backend": MULTI}, {"backend": "a100"}) == "b IN ('a100')"


def test_all_without_custom_value_is_every_option_and_custom_all_value_is_verbatim() -> None:
    sql = "b IN (${backend})"
    assert interpolate_variables(sql, {"backend": MULTI}, {"backend": ALL}) == "b IN ('a100','rtx4090')"
    assert interpolate_variables(sql, {"backend": MULTI}, {"backend": [ALL]}) == "b IN ('a100','rtx4090')"
    assert interpolate_variables(sql, {"backend": SENTINEL}, {}) == "b IN ('__all')"


def test_plain_variable_is_escaped_but_not_quoted_and_named_formats_apply() -> None:
    plain = Variable("host")
    assert interpolate_variables("h = '$host'", {"host": plain}, {"host": "o'neil"}) == "h = 'o''neil'"
    values = {"backend": ["a", "b"]}
    assert interpolate_variables("${backend:csv}", {"backend": MULTI}, values) == "a,b"
    assert interpolate_variables("${backend:sqlstring}", {"backend": MULTI}, values) == "'a','b'"
    assert interpolate_variables("[[backend]]", {"backend": MULTI}, values) == "'a','b'"
    with pytest.raises(GrafanaSqlError):
        interpolate_variables("${backend:lucene}", {"backend": MULTI}, values)


def test_unknown_names_are_left_for_the_macro_engine() -> None:
    sql = "$__timeFilter(ts) AND $other"
    assert interpolate_variables(sql, {"backend": MULTI}) == sql


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("1d", 86_400),
        ("1w", 604_800),
    ],
)
def test_intervals_parse_like_gtime(text: str, seconds: float) -> None:
    assert parse_interval(text).total_seconds() == seconds


def test_interval_helpers() -> None:
    assert go_float(300.0) == "300"
    assert go_float(0.5) == "0.5"
    assert interval_text(timedelta(seconds=90)) == "90s"
    assert interval_text(timedelta(hours=2)) == "2h"
    day = TimeRange(FROM, FROM + timedelta(days=1))
    assert panel_interval(day, None) == MINUTE
    assert panel_interval(day, "5m") == timedelta(minutes=5)
    with pytest.raises(GrafanaSqlError):
        parse_interval("5 minutes")
