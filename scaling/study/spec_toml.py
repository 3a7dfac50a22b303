"""A study spec's TOML file in, a validated `StudySpec` out.

Loading validates the whole file up front (one `RunConfig` per cell included), so a typo fails
in a second, not after an hour of training; every error is one line:
``<file>: <key>: expected ..., got ...``. The keys are documented in docs/studies.md; see
studies/*.toml for real specs.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError
from scaling.study.spec_model import (DEFAULT_PLASTICITY, PER_SIZE_KEYS, PLASTICITY, SAMPLERS, Budget, Cell,
                                      DecaySearch, RefineSettings, SizeSpec, StudySpec, WorkerSettings)
from scaling.study.training import MAX_SEED, RunConfig, ladder_sizes, shape_keys, trained_tokens
from scaling.study.values import is_finite_number

TOP_KEYS = ("name", "description", "sizes", "budgets", "decay", "seeds", "tasks", "storage",
            *PER_SIZE_KEYS, "run", "worker", "batch_models", "cooldown_branches", "compile", "plasticity", "refine")
MAX_N_TRIALS = 100_000  # per cell; planning enqueues every one
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def spec_owned() -> frozenset[str]:
    """RunConfig fields the spec sets itself; [run] may not override them."""
    return frozenset({"size", *shape_keys(), "decay", "tokens", "tpp", "seed", "tasks", *PER_SIZE_KEYS})


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
    if max(seeds) > MAX_SEED:
        v.fail("seeds", f"integers <= {MAX_SEED} (32-bit seeds)", max(seeds))
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
        from scaling.study.storage import safe_url  # only here: loading a spec imports no SQLAlchemy

        v.fail("storage", "an SQLAlchemy URL such as sqlite:///path.db", safe_url(storage))
    worker = _parse_worker(v, data)
    batch_models = v.get(data, "batch_models", int, "a positive integer (trials trained together)",
                         default=1, low=1)
    cooldown_branches = v.get(data, "cooldown_branches", bool, "true or false", default=False)
    compile = v.get(data, "compile", bool, "true or false", default=False)
    if compile and batch_models == 1 and not cooldown_branches:
        v.fail("compile", "batch_models > 1 or cooldown_branches = true (compile applies to stacked units)", True)
    plasticity = v.get(data, "plasticity", str, "one of " + ", ".join(map(repr, PLASTICITY)), default=DEFAULT_PLASTICITY)
    if plasticity not in PLASTICITY:
        v.fail("plasticity", "one of " + ", ".join(map(repr, PLASTICITY)), plasticity)
    refine = _parse_refine(v, data)
    if refine.enabled and not decay.is_grid:
        v.fail("refine.trials", "0 with a sampler search (the sampler refines itself; refinement follows a grid)",
               refine.trials)
    spec = StudySpec(name=name, path=path, sizes=sizes, budgets=budgets, decay=decay, seeds=seeds,
                     tasks=tasks, per_size=per_size, run=run, storage=storage, worker=worker,
                     description=description, batch_models=batch_models, cooldown_branches=cooldown_branches,
                     compile=compile, plasticity=plasticity, refine=refine)
    _check_run_configs(v, spec, data)
    _check_distinct_budgets(v, spec)
    if cooldown_branches:
        _check_cooldown_branches(v, spec)
    return spec


def _check_cooldown_branches(v: "_Validator", spec: StudySpec) -> None:
    """Branches share one run per (size, decay, seed) across budgets: the decay must be the same
    in every budget's cell (a grid, not a per-cell sampler) and the schedule WSD."""
    if spec.decay.taus is not None:
        v.fail("cooldown_branches", "a [decay] grid of absolute decays (a tau grid gives every budget its own decays, "
               "which one shared run cannot have)", "decay.tau")
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


def _check_distinct_budgets(v: "_Validator", spec: StudySpec) -> None:
    """Two budgets of one size that train the same number of tokens after the trainer's rounding
    to whole optimizer steps (or that share a cell name) would be one cell twice: refuse them."""
    key = f"budgets.{spec.budgets[0].kind}"
    for size in spec.sizes:
        seen: dict[object, Budget] = {}
        for budget in spec.budgets:
            cell = Cell(size, budget)
            config = spec.run_config(cell, spec.decay_bounds(cell)[0], spec.seeds[0])
            tokens = trained_tokens(config)
            for mark, what in ((("tokens", tokens), f"{tokens:,} tokens (whole steps of {config.batch_tokens:,} "
                                f"tokens) for size {size.name}"), (("label", budget.label), f"the cell name "
                                f"{size.name}@{budget.label}")):
                if mark in seen:
                    other = seen[mark]
                    raise ConfigError(f"{v.path}: {key}: entries {_exact(other.value)} and {_exact(budget.value)} both round to "
                                      f"{what}; expected distinct budgets")
                seen[mark] = budget


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
            v.known(item, ("name", *shape_keys()), key)
            name = v.get(item, "name", str, "a size name", prefix=key)
            if not _NAME_RE.match(name):
                v.fail(f"{key}.name", "a name of letters, digits, '.', '_' or '-'", name)
            shape = {k: v.get(item, k, int, "a positive integer", default=None, prefix=key, low=1)
                     for k in shape_keys()}
            for k in ("d_model", "n_layers"):
                if shape[k] is None:
                    v.fail(f"{key}.{k}", "a positive integer (an explicit shape needs d_model and n_layers)", None)
            sizes.append(SizeSpec(name, tuple((k, x) for k, x in shape.items() if x is not None)))
        else:
            v.fail(f"sizes[{i}]", "a ladder size name or a table", item)
    names = [s.name for s in sizes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        v.fail("sizes", "each size once", dup[0])
    ladder = [s.name for s in sizes if s.is_ladder]
    if ladder:
        known = ladder_sizes()
        for s in ladder:
            if s not in known:
                v.fail("sizes", "ladder sizes from " + ", ".join(known), s)
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
    what = "a table with grid = [...], tau = [...] or low, high, n_trials (and log, sampler)"
    table = v.get(data, "decay", dict, what)
    v.known(table, ("grid", "tau", "low", "high", "log", "sampler", "n_trials"), "decay")
    if "tau" in table:
        return _parse_taus(v, table)
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
    if n_trials > MAX_N_TRIALS:
        v.fail("decay.n_trials", f"at most {MAX_N_TRIALS:,} trials per cell", n_trials)
    return DecaySearch(low=float(low), high=float(high), log=log, sampler=sampler, n_trials=n_trials)


def _parse_taus(v: "_Validator", table: dict[str, Any]) -> DecaySearch:
    """decay.tau: timescales > 0 (inf allowed); decay 0 (tau = inf) is always added."""
    what = "a non-empty list of distinct timescales > 0 (inf for decay 0)"
    extra = sorted(set(table) - {"tau"})
    if extra:
        kind = "a grid" if extra[0] == "grid" else "a sampler search"
        v.fail(f"decay.{extra[0]}", f"nothing beside decay.tau ({kind} and a tau grid cannot be combined)",
               table[extra[0]])
    values = table["tau"]
    if not isinstance(values, list) or not values:
        v.fail("decay.tau", what, values)
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or not x > 0:
            v.fail("decay.tau", what, x)
    if len(set(values)) != len(values):
        v.fail("decay.tau", what, values)
    taus = sorted({float(x) for x in values} | {math.inf}, reverse=True)
    return DecaySearch(taus=tuple(taus))


def _parse_refine(v: "_Validator", data: dict[str, Any]) -> RefineSettings:
    table = v.get(data, "refine", dict, "a table with trials (and rounds)", default={})
    v.known(table, ("trials", "rounds"), "refine")
    trials = v.get(table, "trials", int, "an integer >= 0 (trials added per cell per round; 0: off)",
                   prefix="refine", default=0, low=0)
    rounds = v.get(table, "rounds", int, "an integer >= 1", prefix="refine", default=1, low=1)
    return RefineSettings(trials=trials, rounds=rounds)


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
    owned = spec_owned()
    for key, value in run.items():
        if key in owned:
            where = "the decay table" if key == "decay" else "the spec's top level"
            v.fail(f"run.{key}", f"no {key} here (set it in {where})", value)
        if key not in annotations:
            v.fail(f"run.{key}", "a RunConfig setting (" + ", ".join(sorted(set(annotations) - owned)) + ")",
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
    for cell in spec.cells():
        try:
            lo, hi = spec.decay_bounds(cell)
        except ConfigError as exc:
            field_name, _, rest = str(exc).partition(":")
            raise ConfigError(f"{v.path}: {_spec_key(field_name.strip(), cell, spec, data)}:{rest}") from None
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
    if run_field in shape_keys() or run_field == "size":
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
        what = f"a finite number{_bound(low, strict)}"
        if key not in table:
            self.fail(full, what, None)
        if not _in_range(table[key], low, strict):
            self.fail(full, what, table[key])
        return float(table[key])

    def num_list(self, table: dict[str, Any], key: str, prefix: str = "", low: float | None = None,
                 strict: bool = False) -> list[float]:
        full = _join(prefix, key)
        what = f"a non-empty list of finite numbers{_bound(low, strict)}"
        value = self._list(table, key, full, what)
        for x in value:
            if not _in_range(x, low, strict):
                self.fail(full, what, x)
        return [float(x) for x in value]

    def int_list(self, table: dict[str, Any], key: str, prefix: str = "", low: int | None = None,
                 default: Any = ...) -> list[int]:
        full = _join(prefix, key)
        what = "a non-empty list of distinct integers" + ("" if low is None else f" >= {low}")
        if key not in table and default is not ...:
            return list(default)
        value = self._list(table, key, full, what)
        for x in value:
            if isinstance(x, bool) or not isinstance(x, int) or (low is not None and x < low):
                self.fail(full, what, x)
        if len(set(value)) != len(value):
            self.fail(full, what, value)
        return value

    def str_list(self, table: dict[str, Any], key: str) -> list[str]:
        what = "a non-empty list of distinct non-empty strings"
        value = self._list(table, key, key, what)
        for x in value:
            if not isinstance(x, str) or not x.strip():
                self.fail(key, what, x)
        if len(set(value)) != len(value):
            self.fail(key, what, value)
        return value

    def _list(self, table: dict[str, Any], key: str, full: str, what: str) -> list[Any]:
        """table[key] as a list, failing unless it is a non-empty one."""
        value = table.get(key)
        if not isinstance(value, list) or not value:
            self.fail(full, what, value)
        return list(value)


def _bound(low: float | None, strict: bool) -> str:
    return "" if low is None else f" {'>' if strict else '>='} {low:g}"


def _in_range(x: Any, low: float | None, strict: bool) -> bool:
    return is_finite_number(x) and (low is None or x > low or (not strict and x == low))


def _exact(x: float) -> str:
    """A number as short as it prints without losing its value (1, 1.0000001)."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(x)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
