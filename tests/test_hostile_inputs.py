"""Hostile and careless inputs, run through the real CLI.

Each case must give exit status 2 and exactly one line on stderr, `scaling <cmd>: error: ...`:
no traceback, no password from a storage URL anywhere in the output, and nothing left behind
(no half-written or temp file, no replaced result).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from scaling.cli import main
from scaling.study import load_spec
from scaling.study.storage import mask_secrets, safe_url

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cretPw"
SPEC = """
name = "{name}"
sizes = ["13k"]
budgets = {{ tpp = [5] }}
seeds = [0]
tasks = ["arithmetic"]
batch_size = 16
context = 128

[decay]
grid = [0, 0.1]

[run]
device = "cpu"
eval_tokens = 4096
"""


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, out: str, err: str, command: str, *, secrets: tuple[str, ...] = (SECRET,)) -> str:
    assert rc == 2, (rc, out, err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scaling {command}: error: "), err
    assert "Traceback" not in out + err
    for secret in secrets:
        assert secret not in out + err
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def spec_path(tmp_path, monkeypatch) -> Path:
    """A tiny spec in an empty working directory (its default storage is results/<name>/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALING_STORAGE", raising=False)
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC.format(name="tiny"), encoding="utf-8")
    return path


def seed_storage(spec_path: Path, url: str, n_trials: int = 1) -> None:
    """The spec's first cell study in `url` with `n_trials` completed trials, written as a worker would."""
    spec = load_spec(spec_path)
    cell = spec.cells()[0]
    study = optuna.create_study(study_name=spec.study_name(cell), storage=url, directions=["minimize", "maximize"],
                                load_if_exists=True)  # fmt: skip
    for i in range(n_trials):
        attrs = {"plan": f"decay={i}/seed=0", "seed": 0, "size": cell.size.name,
                 "metric_keys": ["val_loss", "ft_score"], "val_loss": 3.0 + i, "ft_score": 0.5}
        study.add_trial(create_trial(values=[3.0 + i, 0.5], params={"decay": float(i)},
                                     distributions={"decay": FloatDistribution(0.0, 10.0)}, user_attrs=attrs))


# ----------------------------------------------------------------------------- export


def test_export_from_a_storage_without_the_spec_refuses_and_keeps_the_results(spec_path, tmp_path, capsys):
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    pd.DataFrame({"cell": ["a"] * 36, "val_loss": 3.0}).to_csv(results / "trials.csv", index=False)
    (results / "curves.csv").write_text("cell,trial_number\na,0\n")
    before = files_under(results)
    empty = tmp_path / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{empty}").engine.dispose()  # an Optuna storage holding no study

    rc, out, err = run_cli(capsys, "study", "export", spec_path, "--storage", f"sqlite:///{empty}")
    line = assert_one_line_error(rc, out, err, "study")
    assert "holds no study of spec 'tiny'" in line
    assert files_under(results) == before


def test_export_never_replaces_a_table_with_fewer_trials_unless_forced(spec_path, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    seed_storage(spec_path, url, n_trials=1)
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    pd.DataFrame({"cell": ["a"] * 5, "val_loss": 3.0}).to_csv(results / "trials.csv", index=False)
    before = files_under(results)

    rc, out, err = run_cli(capsys, "study", "export", spec_path, "--storage", url)
    line = assert_one_line_error(rc, out, err, "study")
    assert "holds 5 trials" in line and "only 1" in line and "--force" in line
    assert files_under(results) == before

    rc, out, err = run_cli(capsys, "study", "export", spec_path, "--storage", url, "--force")
    assert rc == 0, err
    assert "1 trials (replaced a table of 5)" in out
    assert len(pd.read_csv(results / "trials.csv")) == 1
    assert sorted(files_under(results)) == ["curves.csv", "failed.csv", "trials.csv"]  # no temp file left


def test_export_out_naming_an_existing_file_is_one_line(spec_path, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    seed_storage(spec_path, url)
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    rc, out, err = run_cli(capsys, "study", "export", spec_path, "--storage", url, "--out", target)
    assert "is a file" in assert_one_line_error(rc, out, err, "study")
    assert target.read_text() == "mine\n"


# ----------------------------------------------------------------------------- report, fits.json


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> Path:
    from tests.test_report import synthetic_study

    folder = tmp_path_factory.mktemp("hostile") / "study"
    folder.mkdir()
    trials, curves = synthetic_study()  # 6 cells: enough for fits and recommendations
    trials.to_csv(folder / "trials.csv", index=False)
    curves.to_csv(folder / "curves.csv", index=False)
    return folder


def test_report_out_naming_a_folder_is_one_line_and_leaves_nothing(study_folder, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = files_under(study_folder)
    rc, out, err = run_cli(capsys, "report", study_folder, "--out", out_dir, "--bootstrap", "0")
    assert "is a folder" in assert_one_line_error(rc, out, err, "report")
    assert list(out_dir.iterdir()) == [] and files_under(study_folder) == before


def test_fit_out_naming_a_folder_is_one_line_and_leaves_nothing(study_folder, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, out, err = run_cli(capsys, "fit", study_folder / "trials.csv", "--out", out_dir, "--bootstrap", "0")
    assert "is a folder" in assert_one_line_error(rc, out, err, "fit")
    assert list(out_dir.iterdir()) == [] and not list(study_folder.glob("*.tmp"))


def test_a_write_that_fails_halfway_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    from scaling.io import write_atomic

    target = tmp_path / "fits.json"
    write_atomic(target, '{"old": 1}\n')
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, '{"new": "' + "x" * 100_000 + '\ud800"}')  # fails once the temp file exists
    assert target.read_text() == '{"old": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["fits.json"]


XSS = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script>"
HOSTILE = f"{XSS}{BREAKOUT}\"'><svg onload=alert(3)>"


class _Tags(HTMLParser):
    """Every element and attribute name in a page, and the text of its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: set[str] = set()
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs |= {name for name, _ in attrs}
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_report_escapes_hostile_cell_task_study_and_column_names(study_folder, tmp_path, capsys):
    from tests.test_report import synthetic_study

    trials, curves = synthetic_study(sizes=(2e4, 6e4), tpps=(10.0,), tasks=(XSS, BREAKOUT))
    cells = {c: f"{c}{HOSTILE}" for c in trials["cell"].unique()}
    trials["cell"], curves["cell"] = trials["cell"].map(cells), curves["cell"].map(cells)
    trials["study"] = HOSTILE
    trials["size"] = HOSTILE
    trials[f"extra{HOSTILE}"] = 1.0  # a column name of its own
    folder = tmp_path / "study"
    folder.mkdir()
    trials.to_csv(folder / "trials.csv", index=False)
    curves.to_csv(folder / "curves.csv", index=False)
    pd.DataFrame([{"cell": HOSTILE, "trial_number": 9, "decay": 30.0, "fail_kind": HOSTILE,
                   "fail_reason": HOSTILE}]).to_csv(folder / "failed.csv", index=False)  # fmt: skip

    rc, out, err = run_cli(capsys, "report", folder, "--bootstrap", "0")
    assert rc == 0, err
    page = (folder / "report.html").read_text(encoding="utf-8")
    parsed = _Tags()
    parsed.feed(page)
    assert "img" not in parsed.tags and "svg" not in parsed.tags
    assert not {a for a in parsed.attrs if a.startswith("on")}
    assert parsed.tags.count("script") == 1 + page.count("data-figure=")  # plotly.js + one per figure
    figures = [s for s in parsed.scripts if "Plotly.newPlot" in s]
    assert len(figures) == page.count("data-figure=") and any("onerror=alert(1)" in s for s in figures)
    assert not any("<img" in s or "<svg" in s or "</script" in s for s in figures)  # JSON escapes '<'
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # shown as text, not dropped
    assert sorted(p.name for p in folder.iterdir()) == ["curves.csv", "failed.csv", "report.html", "trials.csv"]


# ----------------------------------------------------------------------------- storage URLs


@pytest.mark.parametrize("url, expected", [
    (f"postgresql:/postgres:{SECRET}@127.0.0.1/db", "expected an SQLAlchemy URL"),
    (f"postgresql://postgres:ab@{SECRET}@127.0.0.1:5432/db", "percent-encode"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:abc/db", "the port must be a number"),
])  # fmt: skip
def test_a_bad_storage_url_is_one_line_without_its_password(spec_path, capsys, url, expected):
    for argv in (["study", "status", spec_path, "--storage", url], ["study", "export", spec_path, "--storage", url]):
        rc, out, err = run_cli(capsys, *argv)
        assert expected in assert_one_line_error(rc, out, err, "study")


@pytest.mark.parametrize("url", [f"postgresql:/postgres:{SECRET}@127.0.0.1/db", f"postgresql://u:{SECRET}@h:abc/db"])
def test_a_bad_storage_url_in_the_spec_is_masked_too(spec_path, capsys, url):
    spec_path.write_text(f'storage = "{url}"\n' + spec_path.read_text())
    rc, out, err = run_cli(capsys, "study", "status", spec_path)
    assert_one_line_error(rc, out, err, "study")


def test_a_bad_storage_url_from_the_environment_is_masked_too(spec_path, capsys, monkeypatch):
    monkeypatch.setenv("SCALING_STORAGE", f"postgresql:/postgres:{SECRET}@127.0.0.1/db")
    rc, out, err = run_cli(capsys, "study", "status", spec_path)
    assert "postgresql:/postgres:***@127.0.0.1/db" in assert_one_line_error(rc, out, err, "study")


@pytest.mark.parametrize("url", [
    f"postgresql:/postgres:{SECRET}@h/db", f"postgresql://u:{SECRET}@h:5432/db", f"postgresql://u:a@b{SECRET}@h/db",
    f"postgres:{SECRET}@h", f"postgresql://u@h/db?password={SECRET}&sslmode=require",
])  # fmt: skip
def test_masking_hides_every_password_even_in_malformed_urls(url):
    assert SECRET not in safe_url(url)
    assert SECRET not in mask_secrets(f"could not connect to {url}: refused")


def test_masking_keeps_urls_without_a_password_readable():
    for url in ("postgresql://postgres@127.0.0.1:5432/studies", "sqlite:///results/quickstart/optuna.db"):
        assert safe_url(url) == url


def test_storage_precedence_is_flag_then_environment_then_spec(spec_path, tmp_path, capsys, monkeypatch):
    env_db, flag_db = tmp_path / "env.db", tmp_path / "flag.db"
    seed_storage(spec_path, f"sqlite:///{env_db}")
    seed_storage(spec_path, f"sqlite:///{flag_db}", n_trials=2)
    monkeypatch.setenv("SCALING_STORAGE", f"sqlite:///{env_db}")
    rc, out, _ = run_cli(capsys, "study", "status", spec_path)
    assert rc == 0 and str(env_db) in out
    rc, out, _ = run_cli(capsys, "study", "export", spec_path, "--storage", f"sqlite:///{flag_db}")
    assert rc == 0 and "2 trials" in out
    assert not (tmp_path / "results" / "tiny" / "optuna.db").exists()  # the spec's default was never used


def test_a_corrupt_sqlite_file_is_one_line(spec_path, tmp_path, capsys):
    db = tmp_path / "optuna.db"
    db.write_bytes(b"this is not a database\x00" * 100)
    rc, out, err = run_cli(capsys, "study", "status", spec_path, "--storage", f"sqlite:///{db}")
    assert "not an SQLite database" in assert_one_line_error(rc, out, err, "study")


def test_a_300_character_spec_name_on_sqlite_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALING_STORAGE", raising=False)
    path = tmp_path / "long.toml"
    path.write_text(SPEC.format(name="a" * 300), encoding="utf-8")
    for results_exists in (False, True):  # stat() says ENOENT first when results/ is missing
        if results_exists:
            (tmp_path / "results").mkdir()
        for action in ("status", "export", "run"):
            rc, out, err = run_cli(capsys, "study", action, path, "--workers", "1") if action == "run" else \
                run_cli(capsys, "study", action, path)  # fmt: skip
            assert "File name too long" in assert_one_line_error(rc, out, err, "study")
        assert list(tmp_path.glob("results/*")) == [] and (tmp_path / "results").exists() == results_exists


def _without_root_powers() -> list[str] | None:
    """A command prefix under which file permissions apply (root ignores them), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _run_subprocess(prefix: list[str], *argv: str, cwd: Path, limit_as: int | None = None):
    def limits():
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SCALING_STORAGE", None)
    return subprocess.run([*prefix, sys.executable, "-m", "scaling.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=limits)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_sqlite_storage_is_one_line(spec_path, tmp_path, what):
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "optuna.db"
    seed_storage(spec_path, f"sqlite:///{db}")
    before = files_under(folder)
    (db if what == "file" else folder).chmod(0o444 if what == "file" else 0o555)
    try:
        for action in ("status", "export"):
            done = _run_subprocess(prefix, "study", action, spec_path, "--storage", f"sqlite:///{db}", cwd=tmp_path)
            line = assert_one_line_error(done.returncode, done.stdout, done.stderr, "study")
            assert "read-only" in line and "WAL" in line
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert files_under(folder) == before


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_db():
    """A throwaway database on the local server, dropped afterwards; its plain postgresql:// URL."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"scaling_hostile_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                                     isolation_level="AUTOCOMMIT")  # fmt: skip
    try:
        with admin.connect() as con:
            con.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - no server here
        admin.dispose()
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({type(exc).__name__})")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as con:
        con.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.mark.postgres
def test_a_plain_postgresql_url_works(spec_path, tmp_path, capsys, postgres_db):
    from scaling.study.storage import open_storage

    store = open_storage(postgres_db)  # a bare postgresql:// with whichever driver is installed
    seed_storage(spec_path, store, n_trials=2)
    store.engine.dispose()
    rc, out, err = run_cli(capsys, "study", "export", spec_path, "--storage", postgres_db, "--out", tmp_path / "out")
    assert rc == 0, err
    assert len(pd.read_csv(tmp_path / "out" / "trials.csv")) == 2


@pytest.mark.postgres
def test_a_600_character_spec_name_on_postgresql_is_one_line_and_creates_nothing(tmp_path, capsys, monkeypatch,
                                                                                postgres_db):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCALING_STORAGE", raising=False)
    path = tmp_path / "long.toml"
    path.write_text(SPEC.format(name="a" * 600), encoding="utf-8")
    rc, out, err = run_cli(capsys, "study", "run", path, "--storage", postgres_db, "--workers", "1", "--no-progress")
    assert "512 characters" in assert_one_line_error(rc, out, err, "study")
    assert optuna.get_all_study_names(postgres_db.replace("postgresql://", "postgresql+psycopg2://")) == []


# ----------------------------------------------------------------------------- input files, memory


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {
        "non_utf8": tmp_path / "latin1.jsonl",
        "deep": tmp_path / "deep.jsonl",
        "deep_toml": tmp_path / "deep.toml",
    }
    files["non_utf8"].write_bytes('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
    files["deep"].write_text("[" * 100_000 + "]" * 100_000 + "\n")
    files["deep_toml"].write_text('name = "x"\nsizes = ' + "[" * 100_000 + "]" * 100_000 + "\n")
    return files


@pytest.mark.parametrize("case, expected", [
    ("non_utf8", "line 2: not UTF-8 text"), ("deep", "line 1: JSON nested too deeply"),
])  # fmt: skip
def test_a_bad_corpus_file_is_one_line_before_any_training(bad_files, capsys, case, expected):
    rc, out, err = run_cli(capsys, "train", "--corpus", bad_files[case], "--tokens", "4096", "--size", "13k")
    assert expected in assert_one_line_error(rc, out, err, "train")


def test_a_bad_task_file_is_one_line(bad_files):
    from scaling.data.tasks import jsonl_task
    from scaling.data.tokenizer import get_tokenizer
    from scaling.errors import DataError

    for case, expected in (("non_utf8", "line 2: not UTF-8 text"), ("deep", "line 1: JSON nested too deeply")):
        with pytest.raises(DataError, match=expected):
            jsonl_task(bad_files[case], get_tokenizer("byte"))


def test_a_spec_nested_100000_deep_is_one_line(bad_files, capsys):
    rc, out, err = run_cli(capsys, "study", "status", bad_files["deep_toml"])
    assert "nested too deeply" in assert_one_line_error(rc, out, err, "study")


@pytest.mark.slow
def test_an_unreadable_corpus_file_is_one_line(tmp_path):
    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    corpus.chmod(0o000)
    done = _run_subprocess(prefix, "train", "--corpus", corpus, "--tokens", "4096", "--size", "13k", cwd=tmp_path)
    corpus.chmod(0o644)
    assert "Permission denied" in assert_one_line_error(done.returncode, done.stdout, done.stderr, "train")


def test_a_batch_too_large_for_memory_is_one_line_at_once(tmp_path, capsys, monkeypatch):
    """Bounded in RunConfig (batch_size x context tokens per step), so nothing is allocated."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "train", "--size", "13k", "--tokens", "4096", "--batch-size", "100000000",
                           "--device", "cpu")  # fmt: skip
    assert "batch_size x context <=" in assert_one_line_error(rc, out, err, "train")
    assert list(tmp_path.iterdir()) == []


def test_a_bug_still_shows_its_traceback(capsys, monkeypatch):
    """Only input errors become one line: an unexpected exception says it is a bug, exit 1."""
    import scaling.commands.report as report_command

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(report_command, "_report", broken)
    rc, _, err = run_cli(capsys, "report", ".")
    assert rc == 1
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("scaling report: internal error (a bug")


# ----------------------------------------------------------------------------- owned by other issues


def _expect_one_line(capsys, command: str, *argv) -> None:
    rc, out, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, out, err, command)


def test_an_astronomical_budget_is_one_line(study_folder, capsys):
    _expect_one_line(capsys, "recommend", "recommend", "--trials", study_folder / "trials.csv", "--params", "1e160",
                     "--tokens", "1e160", "--json", "--bootstrap", "0")


def test_an_astronomical_tpp_is_one_line(study_folder, capsys):
    _expect_one_line(capsys, "recommend", "recommend", "--trials", study_folder / "trials.csv", "--params", "1e9",
                     "--tpp", "1e300", "--bootstrap", "0")


def test_nan_and_negative_objectives_in_a_fit_table_are_refused(study_folder, tmp_path, capsys):
    trials = pd.read_csv(study_folder / "trials.csv")
    trials.loc[0, "val_loss"], trials.loc[1, "val_loss"], trials.loc[2, "val_loss"] = float("nan"), float("inf"), -1.0
    trials.to_csv(tmp_path / "trials.csv", index=False)
    _expect_one_line(capsys, "fit", "fit", tmp_path / "trials.csv", "--bootstrap", "0", "--no-write")


def test_a_boolean_n_params_column_is_refused(study_folder, tmp_path, capsys):
    trials = pd.read_csv(study_folder / "trials.csv")
    trials["n_params"] = True
    trials.to_csv(tmp_path / "trials.csv", index=False)
    _expect_one_line(capsys, "fit", "fit", tmp_path / "trials.csv", "--bootstrap", "0", "--no-write")


# ----------------------------------------------------------------------------- part 2: studies and bounds


def instant_trial(cfg):
    """A fake trial (no training): loss from the decay."""
    return {"val_loss": 3.0 + cfg.decay, "ft_score": 0.5, "ft_nll": 0.7, "seed": cfg.seed, "curve": []}


def test_a_negative_seed_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _expect_one_line(capsys, "train", "train", "--seed", "-1", "--tokens", "4096", "--size", "13k")


@pytest.mark.parametrize("argv, expected", [
    (["--tokens", "1e20"], "tokens: expected a positive integer <= 10,000,000,000,000"),
    (["--tpp", "1e300"], "tpp: expected a number <= 1000000"),
    (["--context", "1000000"], "context: expected a positive integer <= 65,536"),
])  # fmt: skip
def test_budgets_and_shapes_that_would_overflow_are_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "train", "--size", "13k", *argv)
    assert expected in assert_one_line_error(rc, out, err, "train")


@pytest.mark.parametrize("old, new, expected", [
    ("eval_tokens = 4096", "eval_every = -3", "run.eval_every: expected an integer >= 0, got -3"),
    ("eval_tokens = 4096", "seed = 1", "run.seed: expected no seed here"),
    ("grid = [0, 0.1]", "low = 0.01\nhigh = 1\nn_trials = 1000000000", "decay.n_trials: expected at most 100,000"),
    ("seeds = [0]", "seeds = [4294967296]", "seeds: expected integers <= 4294967295"),
])  # fmt: skip
def test_bad_run_settings_in_a_spec_are_refused(spec_path, capsys, old, new, expected):
    spec_path.write_text(spec_path.read_text().replace(old, new))
    rc, out, err = run_cli(capsys, "study", "status", spec_path)
    assert expected in assert_one_line_error(rc, out, err, "study")


@pytest.mark.parametrize("budgets, expected", [
    ("tpp = [1, 1]", "budgets.tpp: entries 1 and 1 both round to"),
    ("tpp = [1, 1.0000001]", "budgets.tpp: entries 1 and 1.0000001 both round to 14,336 tokens"),
    ("tokens = [4096, 4100]", "budgets.tokens: entries 4096 and 4100 both round to 4,096 tokens"),
    ("tpp = [1e300]", "budgets.tpp: expected a number <= 1000000"),
    ("tokens = [100000000000000000]", "budgets.tokens: expected a positive integer <= 10,000,000,000,000"),
])  # fmt: skip
def test_budgets_that_round_to_the_same_tokens_or_overflow_are_refused(spec_path, capsys, budgets, expected):
    spec_path.write_text(spec_path.read_text().replace("tpp = [5]", budgets))
    rc, out, err = run_cli(capsys, "study", "run", spec_path, "--workers", "1")
    assert expected in assert_one_line_error(rc, out, err, "study")
    assert not (spec_path.parent / "results").exists()


def test_a_malformed_storage_url_is_masked_by_the_spec_parser_itself():
    from scaling.errors import ConfigError
    from scaling.study import parse_spec

    data = {"name": "x", "sizes": ["13k"], "budgets": {"tpp": [5]}, "decay": {"grid": [0.1]},
            "storage": f"postgresql:/postgres:{SECRET}@127.0.0.1/db"}
    with pytest.raises(ConfigError) as info:
        parse_spec(data)
    assert SECRET not in str(info.value) and "postgres:***@" in str(info.value)


def test_a_spec_edited_under_the_same_name_is_refused_naming_the_change(spec_path, capsys):
    from scaling.study import run_study

    run_study(load_spec(spec_path), workers=1, trial_fn=instant_trial, progress=False)
    spec_path.write_text(spec_path.read_text().replace("context = 128", "context = 64"))
    rc, out, err = run_cli(capsys, "study", "run", spec_path, "--workers", "1", "--no-progress")
    line = assert_one_line_error(rc, out, err, "study")
    assert "context: 128 -> 64" in line and "--allow-changed-spec" in line
    rc, out, err = run_cli(capsys, "run", spec_path, "--workers", "1", "--no-progress")
    step, error = err.strip().splitlines()  # `scaling run` names its step first
    assert step == "==> study tiny: running planned trials"
    assert "context: 128 -> 64" in assert_one_line_error(rc, out, error, "run")


@pytest.mark.parametrize("argv, expected", [
    (["study", "run", "{spec}", "--workers", "100000"], "workers: expected at most"),
    (["run", "{spec}", "--bootstrap", "-5"], "bootstrap: expected an integer from 0"),
    (["run", "{spec}", "--bootstrap", "10000000"], "bootstrap: expected an integer from 0"),
])  # fmt: skip
def test_bad_run_options_fail_before_the_study_runs(spec_path, capsys, argv, expected):
    rc, out, err = run_cli(capsys, *[a.replace("{spec}", str(spec_path)) for a in argv])
    assert expected in assert_one_line_error(rc, out, err, argv[0])
    assert not (spec_path.parent / "results").exists()


@pytest.fixture
def broken_task(tmp_path) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": 3}\n')
    return path


@pytest.mark.parametrize("what", ["corpus", "task"])
def test_study_run_checks_corpus_and_task_files_before_planning_or_training(spec_path, capsys, broken_task, what):
    text = spec_path.read_text()
    if what == "corpus":
        text = text.replace('device = "cpu"', 'device = "cpu"\ncorpus = "no/such/corpus"')
        expected = "corpus no/such/corpus: no such file or folder"
    else:
        text = text.replace('tasks = ["arithmetic"]', f'tasks = ["arithmetic", "jsonl:{broken_task}"]')
        expected = f'task file {broken_task} line 2: field "prompt" must be a string'
    spec_path.write_text(text)
    for argv in (["study", "run", spec_path, "--workers", "2"], ["run", spec_path, "--workers", "2"]):
        rc, out, err = run_cli(capsys, *argv)
        assert expected in assert_one_line_error(rc, out, err, argv[0])
    assert not (spec_path.parent / "results").exists()  # no storage, no trial


def test_train_checks_its_task_files_before_pretraining(capsys, tmp_path, monkeypatch, broken_task):
    import scaling.train.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("pretraining started before the task file was checked")

    monkeypatch.setattr(pipeline, "run_pipeline", never)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "train", "--size", "13k", "--tokens", "4096", "--tasks", f"arithmetic,jsonl:{broken_task}")
    assert 'line 2: field "prompt" must be a string' in assert_one_line_error(rc, out, err, "train")


def test_a_device_that_is_not_there_is_one_line_before_planning(spec_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec_path.write_text(spec_path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    rc, out, err = run_cli(capsys, "study", "run", spec_path, "--workers", "1")
    assert "device: 'cuda' requested" in assert_one_line_error(rc, out, err, "study")
    assert not (spec_path.parent / "results").exists()


def test_a_study_whose_every_trial_failed_exits_non_zero_with_the_reasons(spec_path, capsys, monkeypatch):
    import scaling.study.units as units

    def broken(cfg):
        raise RuntimeError(f"no luck at decay {cfg.decay:g}" if cfg.decay else "out of luck")

    monkeypatch.setattr(units, "run_one", broken)
    spec_path.write_text(spec_path.read_text() + "\n[worker]\nmax_retry = 0\n")
    rc, out, err = run_cli(capsys, "study", "run", spec_path, "--workers", "1", "--no-progress")
    assert rc == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scaling study: error: study tiny: every trial failed, none completed: 2 trials failed")
    assert "RuntimeError: out of luck (x1)" in last and "RuntimeError: no luck at decay 0.1 (x1)" in last


def test_progress_off_a_terminal_is_plain_lines(spec_path, capsys, monkeypatch):
    from scaling.study import run_study

    monkeypatch.setenv("SCALING_PROGRESS_EVERY", "0")
    run_study(load_spec(spec_path), workers=1, trial_fn=instant_trial, progress=True)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("worker 0: ") for line in lines)
    assert lines[-1].startswith("worker 0: 2/2 trials finished, 2 run by this worker")


def test_a_plan_lock_left_by_a_crashed_run_does_not_block_the_next(spec_path):
    import subprocess as sp

    from scaling.study import run_study
    from scaling.study.storage import _process_space, open_storage

    spec = load_spec(spec_path)
    storage = open_storage(spec.storage_url)
    held = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name="tiny/.plan-lock")
    gone = int(sp.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    storage.set_study_user_attr(held, "holder", {"space": _process_space(), "pid": gone})
    storage.engine.dispose()
    report = run_study(spec, workers=1, trial_fn=instant_trial, progress=False)
    assert report.ok and report.enqueued == 2


@pytest.mark.slow
def test_progress_lines_keep_coming_while_a_long_trial_trains(capsys, monkeypatch):
    from scaling.study.worker import _Lines

    lines = _Lines(3, every=1.0)
    lines.show(0, 4, 1)  # a trial starts
    time.sleep(2.5)  # ... and trains on: the ticker still reports
    lines.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 3 and all(e.startswith("worker 3: 0/4 trials finished, 1 run by this worker") for e in err)
