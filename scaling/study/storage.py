"""Opening Optuna storages safely for many workers, and a cross-machine lock.

The storage stays a plain `optuna.storages.RDBStorage`, so `optuna-dashboard <url>` can read
it. Two things are added:

* SQLite: WAL journal, a 60 s busy timeout and `BEGIN IMMEDIATE` transactions. Python's
  sqlite3 driver normally starts a transaction only at the first write, so Optuna's
  "read the trial, check it is WAITING, mark it RUNNING" could interleave between two local
  worker processes and hand one trial to both. With `BEGIN IMMEDIATE` each transaction holds
  the write lock from its first statement, so that check-then-set is atomic, and a contended
  lock is waited for instead of failing with "database is locked".
* Heartbeats: every storage is opened with a heartbeat interval and grace period and a
  callback that re-queues a stale trial (worker killed, machine lost) with the same params.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import make_url

from scaling.errors import ConfigError
from scaling.study.spec import WorkerSettings

T = TypeVar("T")
SQLITE_TIMEOUT_S = 60


def quiet_optuna() -> None:
    """Workers print progress bars; Optuna's per-trial INFO lines and experimental-feature
    warnings (heartbeat) would drown them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, worker: WorkerSettings | None = None) -> optuna.storages.RDBStorage:
    """An RDBStorage for `url` (any SQLAlchemy URL) with heartbeats and stale-trial retries."""
    quiet_optuna()
    worker = worker or WorkerSettings()
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage: expected an SQLAlchemy URL such as sqlite:///path.db, got {url!r}") from None
    url = _with_available_driver(parsed, url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs: dict = {}
    if is_sqlite:
        _prepare_sqlite(parsed.database)
        # isolation_level=None: the driver stops emitting its own (late) BEGIN; see _begin_immediate.
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S, "isolation_level": None}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        storage = retry_storage(lambda: optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=worker.heartbeat_interval,
            grace_period=worker.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=worker.max_retry),
        ), attempts=3)
    except ImportError as exc:
        raise ConfigError(f"storage: no database driver for {safe_url(url)} ({exc.__cause__ or exc})") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        reason = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()[0]
        raise ConfigError(f"storage: cannot open {safe_url(url)}: {reason}") from None
    if is_sqlite:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _begin_immediate)
        storage.engine.dispose()  # pooled connections predate the listeners
    return storage


def _with_available_driver(parsed: sqlalchemy.engine.URL, url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; when only psycopg2 (the
    `postgres` extra) is installed, use it rather than fail."""
    if parsed.drivername != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def sqlite_file_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet (reading it would create it)."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return False
    db = parsed.database
    return parsed.get_backend_name() == "sqlite" and bool(db) and db != ":memory:" and not Path(db).exists()


def _prepare_sqlite(database: str | None) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    # WAL lets readers (status, dashboard) run while a worker writes; the mode is stored in the
    # file, so setting it once here covers every later connection.
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # In WAL mode NORMAL is still crash-safe for the database; it skips an fsync per commit.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _begin_immediate(conn: sqlalchemy.engine.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_TRANSIENT = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)


def retry_storage(fn: Callable[[], T], attempts: int = 6, first_wait_s: float = 0.5) -> T:
    """Call `fn`, retrying transient storage errors (lost connection, lock timeout) with
    exponential backoff; the last error propagates."""
    wait = first_wait_s
    for attempt in range(attempts):
        try:
            return fn()
        except _TRANSIENT:
            if attempt == attempts - 1:
                raise
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def storage_lock(storage: optuna.storages.BaseStorage, name: str, stale_after_s: float = 300.0,
                 poll_s: float = 0.2, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """A mutex over any Optuna storage, shared by every machine using it.

    Study names are unique in every storage, so creating the study `name` succeeds for exactly
    one caller; it holds the lock until it deletes that study. A lock older than
    `stale_after_s` (its holder died while holding it) is broken by deleting it by id, so two
    waiters breaking the same stale lock cannot delete a fresh one. Hold it for seconds only.
    """
    first_seen: dict[int, float] = {}
    while True:
        try:
            study_id = retry_storage(lambda: storage.create_new_study(
                [optuna.study.StudyDirection.MINIMIZE], study_name=name))
            break
        except optuna.exceptions.DuplicatedStudyError:
            pass
        try:
            held_id = storage.get_study_id_from_name(name)
            owner = storage.get_study_user_attrs(held_id).get("owner", "?")
        except KeyError:  # released meanwhile
            continue
        # Judge staleness by this process's own clock: machines' clocks may disagree.
        if held_id not in first_seen:
            first_seen[held_id] = time.monotonic()
            if log is not None:
                log(f"waiting for lock {name} held by {owner}")
        elif time.monotonic() - first_seen[held_id] > stale_after_s:
            with contextlib.suppress(KeyError, optuna.exceptions.StorageInternalError):
                storage.delete_study(held_id)
            continue
        time.sleep(poll_s)
    try:
        storage.set_study_user_attr(study_id, "owner", owner_id())
        yield
    finally:
        with contextlib.suppress(KeyError):
            retry_storage(lambda: storage.delete_study(study_id))
