"""Study specs: a TOML file in, a frozen `StudySpec` out.

A spec describes a grid of *cells* (one model size x one token budget) and, inside every cell,
a search over the AdamW weight decay (an explicit grid, or a range searched by a sampler),
repeated over seeds. Everything else about a run (lr, schedule, batch, context, any other
`RunConfig` field) is fixed per spec or per size. Loading validates the whole file up front
(including one `RunConfig` per cell) so that a typo fails in a second, not after an hour of
training; every error is one line: ``<file>: <key>: expected ..., got ...``.

Example (see studies/*.toml for real ones)::

    name = "quickstart"
    sizes = ["13k", "56k", { name = "wide", d_model = 64, n_layers = 1, n_heads = 4 }]
    budgets = { tpp = [20] }
    seeds = [0]
    tasks = ["arithmetic"]
    lr = { "13k" = 3e-3, "56k" = 3e-3, wide = 2e-3 }   # or one number for every size

    [decay]
    grid = [0, 0.01, 0.1, 0.5, 1, 3]
    # or: low = 1e-3, high = 10, log = true, sampler = "tpe", n_trials = 12

    [run]            # any other RunConfig field
    eval_tokens = 16384

    batch_models = 4 (top level, before any table) trains up to 4 trials of a cell together.
    cooldown_branches = true (top level; needs schedule = "wsd", warmup_frac = 0 and a decay grid) trains each
    (size, decay, seed) once through its largest budget and branches a cooldown off for every
    smaller budget (`scaling.cooldown`), instead of one full run per budget.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scaling.config import RunConfig
from scaling.errors import ConfigError

SAMPLERS = ("tpe", "gp", "nsga2", "random")
PER_SIZE_KEYS = ("lr", "schedule", "batch_size", "context")
TOP_KEYS = ("name", "description", "sizes", "budgets", "decay", "seeds", "tasks", "storage",
            *PER_SIZE_KEYS, "run", "worker", "batch_models", "cooldown_branches")
SHAPE_KEYS = ("d_model", "n_layers", "n_heads", "d_ff")
# RunConfig fields the spec sets itself; [run] may not override them.
SPEC_OWNED = frozenset({"size", *SHAPE_KEYS, "decay", "tokens", "tpp", "seed", "tasks", *PER_SIZE_KEYS})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SizeSpec:
    """A model size: a ladder name (shape from `scaling.model.LADDER`) or an explicit shape."""

    name: str
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None

    @property
    def is_ladder(self) -> bool:
        return self.d_model is None and self.n_layers is None

    def run_fields(self) -> dict[str, Any]:
        if self.is_ladder:
            return {"size": self.name}
        return {"size": None, "d_model": self.d_model, "n_layers": self.n_layers,
                "n_heads": self.n_heads, "d_ff": self.d_ff}


@dataclass(frozen=True)
class Budget:
    """A pretraining token budget: tokens per non-embedding parameter, or absolute tokens."""

    kind: str  # "tpp" | "tokens"
    value: float

    @property
    def label(self) -> str:
        if self.kind == "tpp":
            return f"{self.value:g}tpp"
        return f"{short_count(int(self.value))}tok"

    def run_fields(self) -> dict[str, Any]:
        if self.kind == "tpp":
            return {"tpp": float(self.value), "tokens": None}
        return {"tokens": int(self.value), "tpp": None}


@dataclass(frozen=True)
class Cell:
    """One (size, budget) pair: one Optuna study."""

    size: SizeSpec
    budget: Budget

    @property
    def name(self) -> str:
        return f"{self.size.name}@{self.budget.label}"


@dataclass(frozen=True)
class DecaySearch:
    """Either an explicit grid (every value run once per seed) or a sampler over [low, high]."""

    grid: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = True
    sampler: str = "tpe"
    n_trials: int | None = None

    @property
    def is_grid(self) -> bool:
        return self.grid is not None

    def bounds(self) -> tuple[float, float]:
        if self.grid is not None:
            return min(self.grid), max(self.grid)
        assert self.low is not None and self.high is not None
        return self.low, self.high

    def describe(self) -> str:
        if self.grid is not None:
            return "grid " + ", ".join(f"{d:g}" for d in self.grid)
        scale = "log" if self.log else "linear"
        return f"{self.sampler} over [{self.low:g}, {self.high:g}] ({scale}), {self.n_trials} trials"


@dataclass(frozen=True)
class PlannedTrial:
    """One trial the plan asks for. `key` is unique within a cell and survives retries; `decay`
    is None when the sampler proposes it."""

    key: str
    seed: int
    decay: float | None


@dataclass(frozen=True)
class WorkerSettings:
    """Crash-safety knobs: a running trial writes a heartbeat every `heartbeat_interval` s; one
    silent for `grace_period` s is failed as stale and re-queued (at most `max_retry` times)."""

    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 3


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: str
    sizes: tuple[SizeSpec, ...]
    budgets: tuple[Budget, ...]
    decay: DecaySearch
    seeds: tuple[int, ...] = (0,)
    tasks: tuple[str, ...] | None = None  # None: RunConfig's default tasks
    per_size: dict[str, dict[str, Any]] = field(default_factory=dict)  # size -> {lr: .., ...}
    run: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    worker: WorkerSettings = WorkerSettings()
    description: str = ""
    # Trials of one cell a worker trains together as one stacked model (`scaling.batched`);
    # 1 trains one trial at a time.
    batch_models: int = 1
    # Budgets of one size from one run: a shared WSD stable phase and a cooldown branch per
    # budget (`scaling.cooldown`, Hagele et al. 2024). Off unless asked for; needs warmup_frac = 0
    # (with a warmup every budget but the smallest would get the smallest one's, a measured bias).
    cooldown_branches: bool = False

    @property
    def storage_url(self) -> str:
        """The spec's storage, or a SQLite file under results/<name>/ (relative to the cwd)."""
        return self.storage or f"sqlite:///results/{self.name}/optuna.db"

    def cells(self) -> tuple[Cell, ...]:
        return tuple(Cell(s, b) for s in self.sizes for b in self.budgets)

    def cell(self, name: str) -> Cell:
        for c in self.cells():
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: cell {name!r} is not in this spec")

    def study_name(self, cell: Cell) -> str:
        return f"{self.name}/{cell.name}"

    def n_trials(self, override: int | None = None) -> int:
        """Planned trials per cell."""
        if self.decay.grid is not None:
            return len(self.decay.grid) * len(self.seeds)
        return override if override is not None else int(self.decay.n_trials or 0)

    def plan(self, n_trials: int | None = None) -> tuple[PlannedTrial, ...]:
        """The trials every cell should run. A grid plans each (decay, seed) once; a sampler
        search plans `n_trials` slots whose seeds cycle through `seeds` (so seed noise reaches
        the sampler as noise instead of being averaged away)."""
        if self.decay.grid is not None:
            return tuple(PlannedTrial(f"decay={d!r}/seed={s}", s, d)
                         for s in self.seeds for d in self.decay.grid)
        n = self.n_trials(n_trials)
        return tuple(PlannedTrial(f"slot={i}/seed={self.seeds[i % len(self.seeds)]}",
                                  self.seeds[i % len(self.seeds)], None) for i in range(n))

    def run_config(self, cell: Cell, decay: float, seed: int) -> RunConfig:
        values: dict[str, Any] = dict(self.run)
        values.update(self.per_size.get(cell.size.name, {}))
        values.update(cell.size.run_fields())
        values.update(cell.budget.run_fields())
        values.update(decay=float(decay), seed=int(seed))
        if self.tasks is not None:
            values["tasks"] = self.tasks
        return RunConfig(**values)


def short_count(n: int) -> str:
    """20000 -> '20k', 1500000 -> '1.5M'; falls back to the plain number when inexact."""
    for suffix, unit in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= unit:
            text = f"{n / unit:g}"
            if "e" not in text and round(float(text) * unit) == n:
                return text + suffix
    return str(n)


# --------------------------------------------------------------------------------------------
# loading


def find_spec(spec: str | Path) -> Path:
    """A path to a TOML file, or a bare name looked up as studies/<name>.toml."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix == "" and Path("studies", f"{spec}.toml").is_file():
        return Path("studies", f"{spec}.toml")
    raise ConfigError(f"{spec}: no such study spec (expected a TOML file or a name in studies/)")


def load_spec(spec: str | Path) -> StudySpec:
    path = find_spec(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_spec(data, str(path))


def parse_spec(data: dict[str, Any], path: str = "<spec>") -> StudySpec:
    """Validate a parsed TOML document; raise ConfigError naming `path` and the key."""
    v = _Validator(path)
    v.known(data, TOP_KEYS, "")
    name = v.get(data, "name", str, "a name of letters, digits, '.', '_' or '-'")
    if not _NAME_RE.match(name):
        v.fail("name", "a name of letters, digits, '.', '_' or '-'", name)
    description = v.get(data, "description", str, "a string", default="")
    sizes = _parse_sizes(v, data)
    size_names = [s.name for s in sizes]
    budgets = _parse_budgets(v, data)
    decay = _parse_decay(v, data)
    seeds = tuple(v.int_list(data, "seeds", low=0, default=[0]))
    tasks = None
    if "tasks" in data:
        tasks = tuple(v.str_list(data, "tasks"))
        _check_tasks(v, tasks)
    per_size: dict[str, dict[str, Any]] = {s: {} for s in size_names}
    for key in PER_SIZE_KEYS:
        if key in data:
            for size, value in _per_size(v, data[key], key, size_names).items():
                per_size[size][key] = value
    run = _parse_run(v, data)
    storage = v.get(data, "storage", str, "an SQLAlchemy URL such as sqlite:///path.db", default=None)
    if storage is not None and "://" not in storage:
        v.fail("storage", "an SQLAlchemy URL such as sqlite:///path.db", storage)
    worker = _parse_worker(v, data)
    batch_models = v.get(data, "batch_models", int, "a positive integer (trials trained together)",
                         default=1, low=1)
    cooldown_branches = v.get(data, "cooldown_branches", bool, "true or false", default=False)
    spec = StudySpec(name=name, path=path, sizes=sizes, budgets=budgets, decay=decay, seeds=seeds,
                     tasks=tasks, per_size=per_size, run=run, storage=storage, worker=worker,
                     description=description, batch_models=batch_models, cooldown_branches=cooldown_branches)
    _check_run_configs(v, spec, data)
    if cooldown_branches:
        _check_cooldown_branches(v, spec)
    return spec


def _check_cooldown_branches(v: "_Validator", spec: StudySpec) -> None:
    """Branches share one run per (size, decay, seed) across budgets: the decay must be the same
    in every budget's cell (a grid, not a per-cell sampler) and the schedule WSD."""
    if not spec.decay.is_grid:
        v.fail("cooldown_branches", "a [decay] grid (a sampler picks decays per cell, which budgets cannot share)",
               "a sampler search")
    for size in spec.sizes:
        cells = [c for c in spec.cells() if c.size == size]
        configs = [spec.run_config(c, spec.decay.grid[0], spec.seeds[0]) for c in cells]
        if configs[0].schedule != "wsd":
            key = "schedule" if "schedule" in spec.per_size.get(size.name, {}) else "cooldown_branches"
            v.fail(key, f"schedule \"wsd\" for cooldown branches (size {size.name})", configs[0].schedule)
        if configs[0].warmup_frac != 0:
            # A shared run has one warmup, so larger budgets would get the smallest one's: at 56k
            # that moved val_loss by -0.054..+0.041, with a sign that changed with the decay.
            v.fail("cooldown_branches", "warmup_frac = 0 in [run] (then every branch equals its full run; "
                   "one shared warmup would bias larger budgets, see docs/studies.md)",
                   f"warmup_frac = {configs[0].warmup_frac:g}")


def _parse_sizes(v: "_Validator", data: dict[str, Any]) -> tuple[SizeSpec, ...]:
    what = "a non-empty list of ladder size names or {name, d_model, n_layers, ...} tables"
    items = v.get(data, "sizes", list, what)
    if not items:
        v.fail("sizes", what, items)
    sizes: list[SizeSpec] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            sizes.append(SizeSpec(item))
        elif isinstance(item, dict):
            key = f"sizes[{i}]"
            v.known(item, ("name", *SHAPE_KEYS), key)
            name = v.get(item, "name", str, "a size name", prefix=key)
            if not _NAME_RE.match(name):
                v.fail(f"{key}.name", "a name of letters, digits, '.', '_' or '-'", name)
            shape = {k: v.get(item, k, int, "a positive integer", default=None, prefix=key, low=1)
                     for k in SHAPE_KEYS}
            for k in ("d_model", "n_layers"):
                if shape[k] is None:
                    v.fail(f"{key}.{k}", "a positive integer (an explicit shape needs d_model and n_layers)", None)
            sizes.append(SizeSpec(name, **shape))
        else:
            v.fail(f"sizes[{i}]", "a ladder size name or a table", item)
    names = [s.name for s in sizes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        v.fail("sizes", "each size once", dup[0])
    ladder = [s.name for s in sizes if s.is_ladder]
    if ladder:
        from scaling.model import LADDER

        for s in ladder:
            if s not in LADDER:
                v.fail("sizes", "ladder sizes from " + ", ".join(LADDER), s)
    return tuple(sizes)


def _parse_budgets(v: "_Validator", data: dict[str, Any]) -> tuple[Budget, ...]:
    what = "a table with one of tpp = [...] or tokens = [...]"
    table = v.get(data, "budgets", dict, what)
    v.known(table, ("tpp", "tokens"), "budgets")
    if len(table) != 1:
        v.fail("budgets", what, table)
    kind = next(iter(table))
    if kind == "tpp":
        values = v.num_list(table, "tpp", prefix="budgets", low=0.0, strict=True)
    else:
        values = v.int_list(table, "tokens", prefix="budgets", low=1)
    return tuple(Budget(kind, x) for x in values)


def _parse_decay(v: "_Validator", data: dict[str, Any]) -> DecaySearch:
    what = "a table with grid = [...] or low, high, n_trials (and log, sampler)"
    table = v.get(data, "decay", dict, what)
    v.known(table, ("grid", "low", "high", "log", "sampler", "n_trials"), "decay")
    if "grid" in table:
        extra = sorted(set(table) - {"grid"})
        if extra:
            v.fail(f"decay.{extra[0]}", "nothing else beside decay.grid (a grid is searched exhaustively)",
                   table[extra[0]])
        grid = v.num_list(table, "grid", prefix="decay", low=0.0)
        if len(set(grid)) != len(grid):
            v.fail("decay.grid", "distinct values", grid)
        return DecaySearch(grid=tuple(float(x) for x in grid))
    if not {"low", "high", "n_trials"} <= set(table):
        missing = sorted({"low", "high", "n_trials"} - set(table))[0]
        v.fail(f"decay.{missing}", what, None)
    log = v.get(table, "log", bool, "true or false", default=True, prefix="decay")
    low = v.number(table, "low", prefix="decay", low=0.0, strict=log)
    high = v.number(table, "high", prefix="decay", low=0.0)
    if high <= low:
        v.fail("decay.high", f"a number > decay.low ({low:g})", high)
    sampler = v.get(table, "sampler", str, "one of " + ", ".join(SAMPLERS), default="tpe", prefix="decay")
    if sampler not in SAMPLERS:
        v.fail("decay.sampler", "one of " + ", ".join(SAMPLERS), sampler)
    n_trials = v.get(table, "n_trials", int, "a positive integer", prefix="decay", low=1)
    return DecaySearch(low=float(low), high=float(high), log=log, sampler=sampler, n_trials=n_trials)


def _per_size(v: "_Validator", value: Any, key: str, sizes: list[str]) -> dict[str, Any]:
    """A fixed value for every size, or a table with one value per size."""
    if not isinstance(value, dict):
        return {s: value for s in sizes}
    unknown = sorted(set(value) - set(sizes))
    if unknown:
        v.fail(f"{key}.{unknown[0]}", "one of the spec's sizes (" + ", ".join(sizes) + ")", value[unknown[0]],
               unknown=True)
    missing = [s for s in sizes if s not in value]
    if missing:
        v.fail(f"{key}.{missing[0]}", f"a {key} for every size", None)
    return dict(value)


def _check_tasks(v: "_Validator", tasks: tuple[str, ...]) -> None:
    from scaling.data.tasks import TASKS

    what = "task names from " + ", ".join(sorted(TASKS)) + " or 'jsonl:<path>'"
    for task in tasks:
        if task.startswith("jsonl:"):
            if not Path(task[len("jsonl:"):]).is_file():
                v.fail("tasks", "jsonl:<path> naming an existing file", task)
        elif task not in TASKS:
            v.fail("tasks", what, task)


def _parse_run(v: "_Validator", data: dict[str, Any]) -> dict[str, Any]:
    """[run]: any RunConfig field the spec does not set itself, type-checked against the
    field's annotation (RunConfig checks values, not every type)."""
    run = dict(v.get(data, "run", dict, "a table of RunConfig settings", default={}))
    annotations = {f.name: str(f.type) for f in fields(RunConfig)}
    for key, value in run.items():
        if key in SPEC_OWNED:
            where = "the decay table" if key == "decay" else "the spec's top level"
            v.fail(f"run.{key}", f"no {key} here (set it in {where})", value)
        if key not in annotations:
            v.fail(f"run.{key}", "a RunConfig setting (" + ", ".join(sorted(set(annotations) - SPEC_OWNED)) + ")",
                   value, unknown=True)
        allowed = _toml_types(annotations[key])
        if allowed and not (isinstance(value, allowed) and not (bool not in allowed and isinstance(value, bool))):
            v.fail(f"run.{key}", f"a value of type {annotations[key]}", value)
    return run


def _toml_types(annotation: str) -> tuple[type, ...]:
    """Python types a TOML value may have for a RunConfig annotation like 'int | None'."""
    table = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    allowed: list[type] = []
    for part in annotation.replace(" ", "").split("|"):
        if part == "None":
            continue
        if part.startswith("tuple["):
            allowed.append(list)
        elif part in table:
            allowed.extend(table[part])
        else:
            return ()
    return tuple(allowed)


def _parse_worker(v: "_Validator", data: dict[str, Any]) -> WorkerSettings:
    table = v.get(data, "worker", dict, "a table", default={})
    v.known(table, ("heartbeat_interval", "grace_period", "max_retry"), "worker")
    d = WorkerSettings()
    hb = v.get(table, "heartbeat_interval", int, "a positive integer (seconds)", prefix="worker",
               default=d.heartbeat_interval, low=1)
    grace = v.get(table, "grace_period", int, "a positive integer (seconds)", prefix="worker",
                  default=max(d.grace_period, 3 * hb), low=1)
    if grace <= hb:
        v.fail("worker.grace_period", f"more seconds than worker.heartbeat_interval ({hb})", grace)
    retry = v.get(table, "max_retry", int, "an integer >= 0", prefix="worker", default=d.max_retry, low=0)
    return WorkerSettings(hb, grace, retry)


def _check_run_configs(v: "_Validator", spec: StudySpec, data: dict[str, Any]) -> None:
    """Build one RunConfig per cell (at every decay bound) so RunConfig's own checks run now."""
    lo, hi = spec.decay.bounds()
    for cell in spec.cells():
        for decay in (lo, hi):
            try:
                spec.run_config(cell, decay, spec.seeds[0])
            except ConfigError as exc:
                field_name, _, rest = str(exc).partition(":")
                raise ConfigError(f"{v.path}: {_spec_key(field_name.strip(), cell, spec, data)}:{rest}") from None
            except TypeError as exc:  # a wrong type RunConfig does not check itself
                raise ConfigError(f"{v.path}: run: {exc}") from None


def _spec_key(run_field: str, cell: Cell, spec: StudySpec, data: dict[str, Any]) -> str:
    """Where in the spec a RunConfig field came from."""
    if run_field in spec.run:
        return f"run.{run_field}"
    if run_field in PER_SIZE_KEYS:
        return f"{run_field}.{cell.size.name}" if isinstance(data.get(run_field), dict) else run_field
    if run_field in ("tpp", "tokens"):
        return f"budgets.{cell.budget.kind}"
    if run_field in SHAPE_KEYS or run_field == "size":
        return f"sizes ({cell.size.name})"
    if run_field == "decay":
        return "decay"
    return run_field


class _Validator:
    """Small typed getters that raise one-line ConfigErrors naming the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, expected: str, got: Any, unknown: bool = False) -> None:
        if unknown:
            raise ConfigError(f"{self.path}: {key}: unknown key; expected {expected}")
        shown = "nothing" if got is None else _short_repr(got)
        raise ConfigError(f"{self.path}: {key}: expected {expected}, got {shown}")

    def known(self, table: dict[str, Any], keys: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in keys:
                self.fail(_join(prefix, key), "one of " + ", ".join(keys), table[key], unknown=True)

    def get(self, table: dict[str, Any], key: str, kind: type, what: str, default: Any = ...,
            prefix: str = "", low: int | None = None) -> Any:
        full = _join(prefix, key)
        if key not in table:
            if default is ...:
                self.fail(full, what, None)
            return default
        value = table[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok or (low is not None and value < low):
            self.fail(full, what, value)
        return value

    def number(self, table: dict[str, Any], key: str, prefix: str = "", low: float | None = None,
               strict: bool = False) -> float:
        full = _join(prefix, key)
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        what = f"a finite number{bound}"
        if key not in table:
            self.fail(full, what, None)
        value = table[key]
        if not _is_number(value) or (low is not None and (value < low or (strict and value == low))):
            self.fail(full, what, value)
        return float(value)

    def num_list(self, table: dict[str, Any], key: str, prefix: str = "", low: float | None = None,
                 strict: bool = False) -> list[float]:
        full = _join(prefix, key)
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        what = f"a non-empty list of finite numbers{bound}"
        value = table.get(key)
        if not isinstance(value, list) or not value:
            self.fail(full, what, value)
        for x in value:
            if not _is_number(x) or (low is not None and (x < low or (strict and x == low))):
                self.fail(full, what, x)
        return [float(x) for x in value]

    def int_list(self, table: dict[str, Any], key: str, prefix: str = "", low: int | None = None,
                 default: Any = ...) -> list[int]:
        full = _join(prefix, key)
        what = "a non-empty list of distinct integers" + ("" if low is None else f" >= {low}")
        if key not in table and default is not ...:
            return list(default)
        value = table.get(key)
        if not isinstance(value, list) or not value:
            self.fail(full, what, value)
        for x in value:
            if isinstance(x, bool) or not isinstance(x, int) or (low is not None and x < low):
                self.fail(full, what, x)
        if len(set(value)) != len(value):
            self.fail(full, what, value)
        return list(value)

    def str_list(self, table: dict[str, Any], key: str) -> list[str]:
        what = "a non-empty list of distinct non-empty strings"
        value = table.get(key)
        if not isinstance(value, list) or not value:
            self.fail(key, what, value)
        for x in value:
            if not isinstance(x, str) or not x.strip():
                self.fail(key, what, x)
        if len(set(value)) != len(value):
            self.fail(key, what, value)
        return list(value)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
