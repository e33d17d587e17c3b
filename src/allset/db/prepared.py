"""Hot statements compiled once and run straight on the SQLite driver.

Why: on a small upload the process is bound by the GIL, and SQLAlchemy's Core execution
path (cache key, execution context, result metadata, events) was ~26 % of all the time
the GIL was held, against ~2.5 % for SQLite's own ``execute``: ~100 us of machinery
around a statement that takes ~10 us. A ``Prepared`` statement is still written as Core
(one definition, both engines); on SQLite it is compiled once, and each run converts its
parameters with SQLAlchemy's own bind and result processors (the stored formats of
dates and JSON cannot drift from what the ORM writes: ``tests/unit/test_prepared.py``
writes rows both ways and compares them), then calls the driver. On PostgreSQL it runs
through ``Connection.execute`` as before: writers there run in parallel, and the driver
adapts types differently.

Driver errors are raised as SQLAlchemy's (``IntegrityError`` ...), as ``execute`` would.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeAlias, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]
Record: TypeAlias = Any
"""A row of a ``Prepared`` statement: SQLAlchemy's ``Row`` on PostgreSQL, a named tuple
with the same fields, values and types on SQLite."""


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per position: (parameter name or None for a constant, bind processor, constant).
    slots: tuple[tuple[str | None, Callable[[Any], Any] | None, Any], ...]
    row: Callable[..., Any] | None  # a namedtuple class, for statements with rows
    result_procs: tuple[Callable[[Any], Any] | None, ...]
    args: Callable[[Params], list[Any]]  # the driver's parameters, from ``slots``


def _remembering(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``proc`` that answers at once when given the value it was given last: one upload
    binds the same ``now`` to ~10 columns of ~6 statements, and a date's bind processor
    (UTC, then SQLite's text form) is ~5 us each time. For immutable values only (a
    dict could change between two calls). The pair is replaced whole (atomic under the
    GIL) and holds its value, so an identical ``is`` means the same object."""
    last: list[tuple[Any, Any]] = [(object(), None)]

    def run(value: Any) -> Any:
        seen = last[0]
        if seen[0] is value:
            return seen[1]
        out = proc(value)
        last[0] = (value, out)
        return out

    return run


def _arg_builder(
    slots: tuple[tuple[str | None, Callable[[Any], Any] | None, Any], ...],
) -> Callable[[Params], list[Any]]:
    """A function from a parameter mapping to the driver's positional parameters: the
    named values fetched at once (``itemgetter``), converted where a processor is
    needed, constants in their places. A statement runs ~10 times per small upload; a
    generator over every slot was a sixth of the statement's own Python time."""
    named = [(i, name, proc) for i, (name, proc, _) in enumerate(slots) if name is not None]
    consts = [(i, const) for i, (name, _, const) in enumerate(slots) if name is None]
    fixed = [const for _, const in consts]
    if not named:
        return lambda params: list(fixed)
    get = itemgetter(*(name for _, name, _ in named))
    single = len(named) == 1
    convert = [(k, proc) for k, (_, _, proc) in enumerate(named) if proc is not None]
    places = [i for i, _, _ in named]
    in_order = not consts  # the named values are the whole list, in order

    def build(params: Params) -> list[Any]:
        got = get(params)
        values = [got] if single else list(got)
        for k, proc in convert:
            values[k] = proc(values[k])
        if in_order:
            return values
        out: list[Any] = [None] * len(slots)
        for place, value in zip(places, values, strict=True):
            out[place] = value
        for place, const in consts:
            out[place] = const
        return out

    return build


class Rows:
    """The part of SQLAlchemy's ``CursorResult`` the hot paths use, over driver rows."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def all(self) -> list[Any]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [r[0] for r in self._rows]


@dataclass(frozen=True, slots=True)
class DriverConn:
    """A SQLite driver connection outside SQLAlchemy's pool, for ``Prepared.run``
    (``Database.read_one``): the dialect to compile for, and the connection itself."""

    dialect: Dialect
    raw: sqlite3.Connection


_DATES: dict[tuple[str, str], Callable[[Any], Any]] = {}
_DATES_LOCK = threading.Lock()


def _python_type(t: Any) -> type | None:
    """What a column's values are in Python (through a ``TypeDecorator``, its impl's)."""
    try:
        return cast(type, getattr(t, "impl_instance", t).python_type)
    except NotImplementedError:
        return None


class Prepared:
    """A Core statement to run many times with different parameters.

    ``keys``: for an INSERT, the columns it is given (compiled once for those). Every
    parameter a run needs must be given: a column's Python-side default is *not*
    applied here (a missing one raises ``StatementError`` at once, in the tests)."""

    def __init__(self, statement: Executable, keys: Iterable[str] | None = None) -> None:
        self.statement = statement
        self._keys = list(keys) if keys is not None else None
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, dialect: Dialect) -> _Compiled:
        assert isinstance(self.statement, ClauseElement)
        compiled = cast(
            SQLCompiler, self.statement.compile(dialect=dialect, column_keys=self._keys)
        )
        if not compiled.positional or compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: only positional drivers are prepared")
        slots: list[tuple[str | None, Callable[[Any], Any] | None, Any]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if bind.expanding or bind.literal_execute:
                raise TypeError(f"{name}: expanding parameters are not prepared")
            proc: Callable[[Any], Any] | None = bind.type.dialect_impl(dialect).bind_processor(
                dialect
            )
            if proc is not None and _python_type(bind.type) is datetime:
                # One remembering converter per date type, shared by every statement.
                key = (dialect.name, repr(bind.type))
                with _DATES_LOCK:
                    proc = _DATES.setdefault(key, _remembering(proc))
            if bind.required or bind.callable is not None:
                slots.append((bind.key, proc, None))
            else:  # a literal of the statement ("dir", "open" ...): converted once
                value = bind.effective_value
                slots.append((None, None, proc(value) if proc else value))
        columns = list(getattr(self.statement, "exported_columns", ()))
        row = namedtuple("Row", [c.key or f"c{i}" for i, c in enumerate(columns)], rename=True)  # type: ignore[misc]
        procs = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        return _Compiled(
            compiled.string,
            tuple(slots),
            row if columns else None,
            procs,
            _arg_builder(tuple(slots)),
        )

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            with self._lock:
                found = self._compiled.get(dialect.name) or self._compile(dialect)
                self._compiled[dialect.name] = found
        return found

    def run(self, conn: Connection | DriverConn, params: Params | Sequence[Params]) -> Any:
        """Execute; a sequence of parameter sets is an ``executemany`` (no rows back).

        Returns SQLAlchemy's result on PostgreSQL, ``Rows`` on SQLite: both have
        ``first``, ``one``, ``all``, ``scalar``, ``scalars`` and ``rowcount``."""
        raw: Any
        if type(conn) is DriverConn:
            c, raw = self._compiled.get("sqlite") or self._for(conn.dialect), conn.raw
        elif conn.dialect.name != "sqlite":
            return conn.execute(self.statement, params)  # type: ignore[union-attr]
        else:
            c = self._compiled.get("sqlite") or self._for(conn.dialect)
            raw = conn.connection.dbapi_connection  # type: ignore[union-attr]
            assert isinstance(raw, sqlite3.Connection)
        fetched: list[Any] = []
        # (``dict`` first: the ABC check alone was ~1 us, twice per statement)
        one = type(params) is dict or isinstance(params, Mapping)
        try:
            if one:
                args: Any = c.args(params)  # type: ignore[arg-type]
            else:
                args = [c.args(p) for p in params]  # type: ignore[arg-type]
        except KeyError as exc:  # as SQLAlchemy words it
            raise StatementError(
                f"A value is required for bind parameter {exc}", c.sql, None, None
            ) from exc
        try:
            if one:
                cur = raw.execute(c.sql, args)
                count = cur.rowcount
                if c.row is not None:
                    fetched = cur.fetchall()
            elif c.row is None:
                count = raw.executemany(c.sql, args).rowcount
            else:  # the driver's executemany returns no rows: one at a time
                count = 0
                for one in args:
                    cur = raw.execute(c.sql, one)
                    fetched.extend(cur.fetchall())
                    count += max(cur.rowcount, 0)
        except sqlite3.Error as exc:  # as SQLAlchemy would have raised it
            raise DBAPIError.instance(c.sql, None, exc, sqlite3.Error) from exc
        return Rows([_convert(c, r) for r in fetched], count)


def _convert(c: _Compiled, raw: tuple[Any, ...]) -> Any:
    assert c.row is not None
    return c.row(*[p(v) if p else v for p, v in zip(c.result_procs, raw, strict=True)])
