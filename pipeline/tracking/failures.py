"""A tracking store that failed mid-cell, said in one line: which store, what happened, what to do.

    from pipeline.tracking.failures import store_failure, is_locked, quiet_store_errors
    raise TrackingError(f"{cell}: {store_failure(uri, exc)}")

The cause is read from the exception chain (SQLAlchemy's `.orig`, `__cause__`, `__context__`):
SQLite's own error names (sqlite3.Error.sqlite_errorname: SQLITE_BUSY / SQLITE_LOCKED = another
connection holds the lock; SQLITE_FULL = no room), an OSError's errno (ENOSPC, EDQUOT: artifacts
copied beside the store). MLflow's asynchronous writer re-raises its failures as text only, so
there SQLite's fixed messages for those two codes stand in for the names.

MLflow itself logs each SQL failure with its traceback (mlflow.store.db.utils) and each failed
asynchronous write (mlflow.utils.async_logging) before raising it; the cell says the failure
once, in its own line, so those ERROR records are dropped (quiet_store_errors).
"""

from __future__ import annotations

import errno
import logging
from urllib.parse import urlsplit, urlunsplit

LOCKED, FULL, OTHER = "locked", "full", "other"
_SQLITE_NAMES = {"SQLITE_BUSY": LOCKED, "SQLITE_LOCKED": LOCKED, "SQLITE_FULL": FULL}
_SQLITE_TEXT = {
    "database is locked": LOCKED,
    "database table is locked": LOCKED,
    "database or disk is full": FULL,
}  # sqlite3_errstr() of those codes
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# loggers of MLflow that print a failure (with its traceback) which the cell then raises and says itself
MLFLOW_FAILURE_LOGGERS = ("mlflow.store.db.utils", "mlflow.utils.async_logging.async_logging_queue")


def _chain(exc: BaseException | None, limit: int = 20):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < limit:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError keeps the driver's error here
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
            seen.add(id(orig))
        exc = exc.__cause__ or exc.__context__


def cause(exc: BaseException) -> str:
    """LOCKED, FULL or OTHER."""
    import sqlite3

    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorname", None) in _SQLITE_NAMES:
            return _SQLITE_NAMES[e.sqlite_errorname]
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return FULL
    text = " ".join(str(e) for e in chain)
    return next((kind for message, kind in _SQLITE_TEXT.items() if message in text), OTHER)


def is_locked(exc: BaseException) -> bool:
    return cause(exc) == LOCKED


def shown(uri: str) -> str:
    """The store's URI as a line may show it: a password replaced by ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def store_failure(uri: str, exc: BaseException) -> str:
    """What failed and what to do, one line (no trailing period): the caller adds what became of the runs."""
    kind, store = cause(exc), shown(uri)
    if kind == LOCKED:
        return (
            f"the tracking store {store} is locked by another connection ({_first(exc)}): end the process "
            "holding it (an sqlite3 shell or a database browser with a transaction open) and run the cell again"
        )
    if kind == FULL:
        return (
            f"the disk holding the tracking store {store} is full ({_first(exc)}): free space there and "
            "run the cell again"
        )
    return f"the tracking store {store} failed ({_first(exc)}): check that it answers and run the cell again"


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_DROP = _DropErrors()


def quiet_store_errors() -> None:
    """Drop MLflow's ERROR records of store failures in this process (idempotent): the cell raises
    them as a TrackingError and says each in one line."""
    for name in MLFLOW_FAILURE_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP not in logger.filters:
            logger.addFilter(_DROP)
