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

Every message shows a URL through `safe_url`, which masks the password even in URLs that do
not parse. The CLI also takes the URL from $SCALING_STORAGE (see STORAGE_ENV), so a password
need not appear in argv.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import threading
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
from scaling.study.spec_model import WorkerSettings

T = TypeVar("T")
SQLITE_TIMEOUT_S = 60


def quiet_optuna() -> None:
    """Workers print progress bars; Optuna's per-trial INFO lines and experimental-feature
    warnings (heartbeat) would drown them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


STORAGE_ENV = "SCALING_STORAGE"
"""Environment variable the CLI reads the storage URL from; precedence: --storage > $SCALING_STORAGE > the spec's."""

# user:password@ after an optional scheme; the password runs to the last '@' of the token, so a
# raw '@' inside it is masked too. Deliberately looser than URL syntax: malformed URLs
# ("postgresql:/u:pw@host", a missing "//") are masked as well.
_USERINFO = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.\-]*:/*)?[^\s:/@'\"]*):(?!//)(?P<password>[^\s'\"]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<key>\bpassword=)[^&\s'\"]*")


def mask_secrets(text: str) -> str:
    """`text` with every password in a URL-like `user:password@` or `password=` query masked."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:***@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group('key')}***", text)


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages (parsed or not)."""
    return mask_secrets(url)


def url_secrets(url: str | None) -> list[str]:
    """The password strings in `url` (for scrubbing messages that quote them out of context)."""
    if not url:
        return []
    found = [m.group("password") for m in _USERINFO.finditer(url)]
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url)]
    return [f for f in found if f]


def scrub(text: str, url: str | None) -> str:
    """`text` with `url`'s passwords removed wherever they appear, then mask_secrets."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_secrets(text)


def _parse_url(url: str) -> sqlalchemy.engine.URL:
    example = "an SQLAlchemy URL such as sqlite:///path.db or postgresql://user@host:5432/db"
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a non-numeric port raises here
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        reason = " (the port must be a number)" if isinstance(exc, ValueError) else ""
        raise ConfigError(f"storage: expected {example}, got {safe_url(url)}{reason}") from None
    match = _USERINFO.search(url)
    if match and "@" in match.group("password") and parsed.get_backend_name() != "sqlite":
        raise ConfigError(f"storage: {safe_url(url)}: the password contains '@'; write it as %40 "
                          f"(special characters in a URL password must be percent-encoded)")
    return parsed


def open_storage(url: str, worker: WorkerSettings | None = None) -> optuna.storages.RDBStorage:
    """An RDBStorage for `url` (any SQLAlchemy URL) with heartbeats and stale-trial retries."""
    quiet_optuna()
    worker = worker or WorkerSettings()
    raw = url
    parsed = _parse_url(url)
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
        message = f"storage: no database driver for {safe_url(raw)} ({exc.__cause__ or exc})"
        raise ConfigError(scrub(message, raw)) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        text = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise ConfigError(scrub(f"storage: cannot open {safe_url(raw)}: {reason}", raw)) from None
    if is_sqlite:
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        event.listen(storage.engine, "begin", _begin_immediate)
        storage.engine.dispose()  # pooled connections predate the listeners
    return storage


def _with_available_driver(parsed: sqlalchemy.engine.URL, url: str) -> str:
    """A bare postgresql:// means SQLAlchemy's default driver (psycopg2 up to 2.0, psycopg 3
    from 2.1); use whichever of the two is installed rather than fail on the other's import.
    An explicit postgresql+driver:// is left alone."""
    if parsed.drivername != "postgresql":
        return url
    import importlib.util

    default = parsed.get_dialect().driver
    for driver in dict.fromkeys((default, "psycopg", "psycopg2")):
        if importlib.util.find_spec(driver) is not None:
            return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    return url


def sqlite_file_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet (reading it would create it)."""
    parsed = _parse_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return False
    _check_name_lengths(Path(db))
    try:
        return not Path(db).exists()
    except OSError as exc:
        raise ConfigError(f"storage: cannot use SQLite file {db} ({exc.strerror})") from None


def _check_name_lengths(path: Path) -> None:
    """ConfigError when a component of `path` is longer than the file system allows (a long spec
    name makes a long results/<name>/ folder), before anything is created."""
    limit = 255
    for folder in path.absolute().parents:
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")  # of the nearest existing folder's file system
            break
        except (OSError, ValueError):
            continue
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise ConfigError(f"storage: cannot use SQLite file {path} (File name too long: the folder or file name "
                              f"{part[:20]}... has {len(part)} characters, at most {limit} allowed here)")


def _prepare_sqlite(database: str | None) -> None:
    """Create the folder, check access, switch the file to WAL; ConfigError (one line) when the
    file cannot serve as a storage."""
    if not database or database == ":memory:":
        return
    path = Path(database)
    _check_name_lengths(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"storage: cannot create the folder of SQLite file {path} ({exc.strerror})") from None
    wal_needs = "SQLite's WAL journal needs write access to the database and its folder, even to read it"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"storage: {path} is read-only; {wal_needs}: make it writable or use a copy")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"storage: folder {path.parent} is read-only; {wal_needs} (it keeps {path.name}-wal "
                          f"and {path.name}-shm beside it): make the folder writable or copy it elsewhere")
    # WAL lets readers (status, dashboard) run while a worker writes; the mode is stored in the
    # file, so setting it once here covers every later connection.
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as con:
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        what = "not an SQLite database" if "not a database" in str(exc) else "cannot be opened"
        raise ConfigError(f"storage: {path}: {what} ({exc})") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # In WAL mode NORMAL is still crash-safe for the database; it skips an fsync per commit.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _begin_immediate(conn: sqlalchemy.engine.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_TRANSIENT = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)
# The database refused the data itself (a study name over 512 characters, ...): retrying cannot help.
_REJECTED = (sqlalchemy.exc.DataError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)


def retry_storage(fn: Callable[[], T], attempts: int = 6, first_wait_s: float = 0.5) -> T:
    """Call `fn`, retrying transient storage errors (lost connection, lock timeout) with
    exponential backoff; the last error propagates."""
    wait = first_wait_s
    for attempt in range(attempts):
        try:
            return fn()
        except _TRANSIENT as exc:
            if attempt == attempts - 1 or isinstance(exc.__cause__, _REJECTED):
                raise
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_space() -> str:
    """This host and pid namespace: where a lock owner's pid can be checked with kill(pid, 0)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _owner_dead(owner: dict) -> bool:
    """True only when the owner ran in this process space and its pid is gone."""
    if owner.get("space") != _process_space() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


@contextlib.contextmanager
def storage_lock(storage: optuna.storages.BaseStorage, name: str, stale_after_s: float = 30.0,
                 poll_s: float = 0.2, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """A mutex over any Optuna storage, shared by every machine using it.

    Study names are unique in every storage, so creating the study `name` succeeds for exactly
    one caller; it holds the lock until it deletes that study. The holder records who it is
    (host, pid namespace, pid) and beats a counter every `stale_after_s` / 6 s. A waiter breaks
    the lock at once when its holder ran on the same host and namespace and that pid is gone (a
    crash during planning), and otherwise when the counter has not moved for `stale_after_s` by
    the waiter's own clock (machines' clocks may disagree). The lock is deleted by id, so two
    waiters breaking the same stale lock cannot delete a fresh one. Hold it for seconds only.
    """
    seen: dict[int, tuple[object, float]] = {}  # lock id -> (last beat seen, when it changed)
    while True:
        try:
            study_id = retry_storage(lambda: storage.create_new_study(
                [optuna.study.StudyDirection.MINIMIZE], study_name=name))
            break
        except optuna.exceptions.DuplicatedStudyError:
            pass
        try:
            held_id = storage.get_study_id_from_name(name)
            attrs = storage.get_study_user_attrs(held_id)
        except KeyError:  # released meanwhile
            continue
        owner = attrs.get("holder") if isinstance(attrs.get("holder"), dict) else {}
        beat = attrs.get("beat")
        if held_id not in seen and log is not None:
            log(f"waiting for lock {name} held by {attrs.get('owner', 'an unknown process')}")
        if held_id not in seen or seen[held_id][0] != beat:
            seen[held_id] = (beat, time.monotonic())
        dead = _owner_dead(owner)
        if dead or time.monotonic() - seen[held_id][1] > stale_after_s:
            if log is not None:
                why = "its process is gone" if dead else f"no sign of life for {stale_after_s:g} s"
                log(f"breaking lock {name} held by {attrs.get('owner', 'an unknown process')}: {why}")
            with contextlib.suppress(KeyError, optuna.exceptions.StorageInternalError):
                storage.delete_study(held_id)
            continue
        time.sleep(poll_s)
    stop = threading.Event()
    beater = threading.Thread(target=_beat, args=(storage, study_id, max(0.05, stale_after_s / 6), stop),
                              daemon=True, name=f"lock-{name}")
    try:
        storage.set_study_user_attr(study_id, "owner", owner_id())
        storage.set_study_user_attr(study_id, "holder", {"space": _process_space(), "pid": os.getpid()})
        beater.start()
        yield
    finally:
        stop.set()
        if beater.is_alive():
            beater.join(timeout=5)
        with contextlib.suppress(KeyError):
            retry_storage(lambda: storage.delete_study(study_id))


def _beat(storage: optuna.storages.BaseStorage, study_id: int, every: float, stop: threading.Event) -> None:
    count = 0
    while not stop.wait(every):
        count += 1
        with contextlib.suppress(Exception):  # the lock was broken, or a storage hiccup: the next beat retries
            storage.set_study_user_attr(study_id, "beat", count)
