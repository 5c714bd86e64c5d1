"""Grafana's query pipeline for the PostgreSQL data source, reproduced so tests can run dashboard SQL.

No Grafana server can be installed here (shared/FACTS.md), so the tests replay what Grafana does to a
panel's `rawSql` before PostgreSQL sees it, in Grafana's order:

1. Frontend, template service (`templateSrv.replace` with the SQL data source's `interpolateVariable`):
   `$var`, `${var}`, `${var:format}` and `[[var]]` are replaced. Without an explicit format a multi-value
   or include-All variable becomes single-quoted literals (quotes doubled) joined by commas; a plain
   variable is only quote-escaped. The All value becomes the variable's custom `allValue` verbatim when
   it has one, else every option value (formatted as above). Scoped built-ins `$__interval` and
   `$__interval_ms` are plain text. Unknown `$names` are left alone.
2. Backend, `sqleng.Interpolate`: `$__interval_ms`, `$__interval`, `$__unixEpochFrom()`,
   `$__unixEpochTo()` plain text substitutions.
3. Backend, the PostgreSQL macro engine (`pkg/tsdb/grafana-postgresql-datasource/macros.go`): every
   `$name(args)` is a macro; an unknown one is an error. Times are UTC RFC 3339 with Go's `RFC3339Nano`
   layout (fraction only when non-zero, trailing zeros dropped).

The module is written from the behaviour described in shared/FACTS.md and Grafana's documentation; it
is a test double, not a copy of Grafana's code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ALL = "$__all"  # Grafana's value for "All" in a variable's `current.value`

DATASOURCE_TYPE = "grafana-postgresql-datasource"


class GrafanaSqlError(ValueError):
    """Grafana would refuse this query (unknown macro, bad interval, unknown variable format)."""


# ---------------------------------------------------------------------------------------------- times


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a Grafana time range is made of aware datetimes")
        if self.end < self.start:
            raise ValueError("time range ends before it starts")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def go_rfc3339nano(moment: datetime) -> str:
    """`t.UTC().Format(time.RFC3339Nano)`: `2018-04-12T18:00:00Z`, or `...:00.123Z` with a fraction."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def unix_seconds(moment: datetime) -> int:
    """Go's `t.Unix()`: whole seconds, rounded towards minus infinity."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400 + delta.seconds


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_CALENDAR_UNITS = {"d": 86_400, "w": 7 * 86_400, "M": 30 * 86_400, "y": 365 * 86_400}


def parse_interval(text: str) -> timedelta:
    """`gtime.ParseInterval`: `1d`, `1w`, `1M`, `1y`, or a Go duration like `30s`, `5m`, `1h30m`, `500ms`."""
    calendar = re.fullmatch(r"(\d+)([dwMy])", text)
    if calendar:
        return timedelta(seconds=int(calendar.group(1)) * _CALENDAR_UNITS[calendar.group(2)])
    pos, total = 0, 0.0
    while pos < len(text):
        part = _GO_DURATION_PART.match(text, pos)
        if not part:
            raise GrafanaSqlError(f"error parsing interval {text!r}")
        total += float(part.group(1)) * _GO_UNITS[part.group(2)]
        pos = part.end()
    if not text:
        raise GrafanaSqlError("error parsing interval ''")
    return timedelta(seconds=total)


def go_float(value: float) -> str:
    """Go's `%v` for a float64 (shortest form, no exponent below 1e21): 300 -> `300`, 0.5 -> `0.5`."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def interval_text(interval: timedelta) -> str:
    """How Grafana writes `$__interval`: `30s`, `1m`, `2h`, `1d`, `500ms`."""
    ms = round(interval.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# Grafana's "nice" intervals; the calculator picks the one nearest range / max data points.
_NICE_INTERVALS_S = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400)


def panel_interval(time_range: TimeRange, min_interval: str | None, max_data_points: int = 1200) -> timedelta:
    """An approximation of Grafana's interval calculator: range / max data points, rounded to a nice
    interval, never below the panel's (or data source's) minimum interval. It only sets bucket widths."""
    raw = time_range.seconds / max_data_points
    nice = min(_NICE_INTERVALS_S, key=lambda s: abs(s - raw))
    chosen = timedelta(seconds=nice)
    if min_interval:
        chosen = max(chosen, parse_interval(min_interval))
    return chosen


# ------------------------------------------------------------------------------ template variables


@dataclass(frozen=True)
class Variable:
    name: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None  # Grafana's custom "allValue", inserted verbatim
    options: tuple[str, ...] = ()  # what the variable query returned (used for All without allValue)


Selection = Mapping[str, str | Sequence[str]]  # variable name -> ALL, a value, or a list of values

# templateSrv's variable pattern: $var | [[var]] / [[var:fmt]] | ${var} / ${var.field} / ${var:fmt}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def quote_literal(value: str) -> str:
    """The PostgreSQL query model's `quoteLiteral`: single quotes, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _datasource_format(value: str | Sequence[str], variable: Variable) -> str:
    """The SQL data source's `interpolateVariable` (the default when no `:format` is given)."""
    if isinstance(value, str):
        if variable.multi or variable.include_all:
            return quote_literal(value)
        return value.replace("'", "''")
    return ",".join(quote_literal(v) for v in value)


def _named_format(value: str | Sequence[str], fmt: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt in ("csv", "raw", "text"):
        return ",".join(values)
    if fmt == "sqlstring":
        return ",".join(quote_literal(v) for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    raise GrafanaSqlError(f"variable format {fmt!r} is not reproduced by this test helper")


def interpolate_variables(
    sql: str,
    variables: Mapping[str, Variable],
    selection: Selection | None = None,
    scoped: Mapping[str, str] | None = None,
) -> str:
    """Step 1: the frontend's template service with the SQL data source's formatter."""
    selection = selection or {}
    scoped = scoped or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if match.group(5):
            raise GrafanaSqlError(f"field paths (${{{name}.{match.group(5)}}}) are not reproduced")
        if name in scoped:
            return scoped[name] if fmt is None else _named_format(scoped[name], fmt)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)  # Grafana leaves unknown names (and macros) alone
        value: str | Sequence[str] = selection.get(name, ALL)
        if value == ALL or (not isinstance(value, str) and list(value)[:1] == [ALL]):
            if not variable.include_all:
                raise GrafanaSqlError(f"variable {name!r} has no All option")
            if fmt == "text":
                return "All"
            if variable.all_value and fmt not in ("text", "percentencode"):
                return interpolate_variables(variable.all_value, variables)  # verbatim, no formatting
            value = list(variable.options)
        if fmt is not None:
            return _named_format(value, fmt)
        return _datasource_format(value, variable)

    return _VARIABLE.sub(replace, sql)


# -------------------------------------------------------------------------------- backend: sqleng


def sqleng_interpolate(sql: str, time_range: TimeRange, interval: timedelta) -> str:
    """Step 2: global plain-text substitutions of every SQL data source, `_ms` before the short name."""
    sql = sql.replace("$__interval_ms", str(round(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", interval_text(interval))
    sql = sql.replace("$__unixEpochFrom()", str(unix_seconds(time_range.start)))
    return sql.replace("$__unixEpochTo()", str(unix_seconds(time_range.end)))


# ------------------------------------------------------------------------ backend: postgres macros

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def _group_expression(args: list[str], name: str, template: str) -> str:
    if len(args) < 2:
        raise GrafanaSqlError(f"macro {name} needs time column and interval and optional fill value")
    if len(args) == 3:
        raise GrafanaSqlError("fill modes are not reproduced by this test helper")
    seconds = go_float(parse_interval(args[1].strip("'")).total_seconds())
    return template.format(col=args[0], s=seconds)


def _evaluate_macro(name: str, args: list[str], time_range: TimeRange) -> str:
    start, end = time_range.start, time_range.end
    needs_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter"}
    if name in needs_column and (not args or args == [""]):
        raise GrafanaSqlError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{go_rfc3339nano(start)}' AND '{go_rfc3339nano(end)}'"
    if name == "__timeFrom":
        return f"'{go_rfc3339nano(start)}'"
    if name == "__timeTo":
        return f"'{go_rfc3339nano(end)}'"
    if name == "__timeGroup":
        return _group_expression(args, name, "floor(extract(epoch from {col})/{s})*{s}")
    if name == "__timeGroupAlias":
        return (
            _group_expression(args, "__timeGroup", "floor(extract(epoch from {col})/{s})*{s}") + ' AS "time"'
        )
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {unix_seconds(start)} AND {args[0]} <= {unix_seconds(end)}"
    if name == "__unixEpochGroup":
        return _group_expression(args, name, "floor(({col})/{s})*{s}")
    if name == "__unixEpochGroupAlias":
        return _group_expression(args, "__unixEpochGroup", "floor(({col})/{s})*{s}") + ' AS "time"'
    raise GrafanaSqlError(f"unknown macro {name!r}")


def expand_macros(sql: str, time_range: TimeRange) -> str:
    """Step 3: the PostgreSQL macro engine (TimescaleDB off)."""
    original = sql

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__timeGroup":
            # Pre-5.3 compatibility in Grafana: `$__timeGroup(...)` directly followed by a comma
            # (looked up at its first occurrence in the query) also gets the AS "time" alias.
            at = original.find(match.group(0))
            after = at + len(match.group(0))
            if at >= 0 and after < len(original) and original[after] == ",":
                name = "__timeGroupAlias"
        args = [arg.strip(" ") for arg in match.group(2).split(",")]
        return _evaluate_macro(name, args, time_range)

    return _MACRO.sub(replace, sql)


def render(
    sql: str,
    *,
    time_range: TimeRange,
    interval: timedelta,
    variables: Mapping[str, Variable] | None = None,
    selection: Selection | None = None,
) -> str:
    """The SQL PostgreSQL receives from Grafana for this panel query."""
    scoped = {
        "__interval": interval_text(interval),
        "__interval_ms": str(round(interval.total_seconds() * 1000)),
    }
    sql = interpolate_variables(sql, variables or {}, selection, scoped)
    sql = sqleng_interpolate(sql, time_range, interval)
    sql = expand_macros(sql, time_range)
    leftover = re.search(r"\$\{?\w+", sql)
    if leftover:
        raise GrafanaSqlError(f"{leftover.group(0)!r} was left in the expanded SQL")
    return sql


# ---------------------------------------------------------------------------------- dashboards


@dataclass
class Target:
    dashboard: str
    panel_id: int
    panel_title: str
    panel_type: str
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.dashboard}#{self.panel_id}:{self.target.get('refId')}"

    @property
    def sql(self) -> str:
        return str(self.target.get("rawSql", ""))

    @property
    def format(self) -> str:
        return str(self.target.get("format", "time_series"))


@dataclass
class Dashboard:
    path: Path
    model: dict[str, Any]
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Dashboard:
        model = json.loads(path.read_text(encoding="utf-8"))
        variables = {v["name"]: v for v in model.get("templating", {}).get("list", [])}
        return cls(path, model, variables)

    @property
    def uid(self) -> str:
        return str(self.model["uid"])

    def panels(self) -> Iterator[dict[str, Any]]:
        """Every panel, rows' nested panels included."""
        for panel in self.model.get("panels", []):
            yield panel
            yield from panel.get("panels", [])

    def targets(self) -> Iterator[Target]:
        for panel in self.panels():
            for target in panel.get("targets", []):
                yield Target(self.uid, panel["id"], panel.get("title", ""), panel["type"], panel, target)

    def query_variables(self) -> list[dict[str, Any]]:
        return [v for v in self.variables.values() if v.get("type") == "query"]


def variable_sql(variable: Mapping[str, Any]) -> str:
    """A SQL variable's query: the legacy string form or the object form (`rawSql`)."""
    query = variable.get("query")
    if isinstance(query, str):
        return query
    if isinstance(query, Mapping):
        return str(query.get("rawSql", ""))
    raise GrafanaSqlError(f"variable {variable.get('name')!r} has no query")


def variable_model(variable: Mapping[str, Any], options: Sequence[str] = ()) -> Variable:
    return Variable(
        name=str(variable["name"]),
        multi=bool(variable.get("multi")),
        include_all=bool(variable.get("includeAll")),
        all_value=variable.get("allValue") or None,
        options=tuple(options),
    )


def resolve_variables(
    dashboard: Dashboard, time_range: TimeRange, run: Callable[[str], list[tuple[Any, ...]]]
) -> dict[str, Variable]:
    """Run every query variable (in dashboard order, like Grafana) and collect its options."""
    resolved: dict[str, Variable] = {}
    for raw in dashboard.variables.values():
        if raw.get("type") != "query":
            resolved[raw["name"]] = variable_model(raw)
            continue
        sql = render(
            variable_sql(raw), time_range=time_range, interval=timedelta(minutes=1), variables=resolved
        )
        rows = run(sql)
        resolved[raw["name"]] = variable_model(raw, [str(r[0]) for r in rows if r and r[0] is not None])
    return resolved
