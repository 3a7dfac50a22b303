"""The study spec's data model: frozen values a TOML spec is parsed into (`spec_toml`).

A spec is a grid of *cells* (one model size x one token budget) and, inside every cell, a
search over the AdamW weight decay (a grid, or a range searched by a sampler), repeated over
seeds. Every other `RunConfig` field is fixed per spec or per size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scaling.core.numbers import short_count
from scaling.errors import ConfigError
from scaling.study.training import RunConfig

SAMPLERS = ("tpe", "gp", "nsga2", "random")
# The plasticity objective a spec picks: (metric column, Optuna direction).
PLASTICITY = {"nll": ("ft_nll", "minimize"), "score": ("ft_score", "maximize")}
DEFAULT_PLASTICITY = "nll"  # chosen by measured signal-to-noise: docs/study-design.md
PER_SIZE_KEYS = ("lr", "schedule", "batch_size", "context")


@dataclass(frozen=True)
class SizeSpec:
    """A model size: a ladder name, or a name with an explicit shape (RunConfig's shape fields)."""

    name: str
    shape: tuple[tuple[str, int], ...] = ()  # (field, value) pairs, e.g. (("d_model", 64), ("n_layers", 1))

    @property
    def is_ladder(self) -> bool:
        return not self.shape

    def run_fields(self) -> dict[str, Any]:
        if self.is_ladder:
            return {"size": self.name}
        return {"size": None, **dict(self.shape)}


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
    """An explicit grid (every value run once per seed), a timescale grid `taus` (each cell's
    decays are B / (peak lr * tau * D); inf is decay 0) or a sampler over [low, high]."""

    grid: tuple[float, ...] | None = None
    taus: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = True
    sampler: str = "tpe"
    n_trials: int | None = None

    @property
    def is_grid(self) -> bool:
        """Every decay fixed at enqueue time (an absolute or a timescale grid)."""
        return self.grid is not None or self.taus is not None

    def bounds(self) -> tuple[float, float]:
        """The absolute grid's or the sampler's range (a timescale grid's is per cell:
        `StudySpec.decay_bounds`)."""
        if self.taus is not None:
            raise ValueError("a timescale grid has per-cell decays: use StudySpec.decay_bounds(cell)")
        if self.grid is not None:
            return min(self.grid), max(self.grid)
        assert self.low is not None and self.high is not None
        return self.low, self.high

    def describe(self) -> str:
        if self.taus is not None:
            return "tau grid " + ", ".join(f"{t:g}" for t in self.taus) + " (decay = B / (peak lr * tau * D))"
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
    tau: float | None = None  # the timescale the decay was set from (a tau grid), inf for decay 0


@dataclass(frozen=True)
class WorkerSettings:
    """Crash-safety knobs: a running trial writes a heartbeat every `heartbeat_interval` s; one
    silent for `grace_period` s is failed as stale and re-queued (at most `max_retry` times)."""

    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 3


@dataclass(frozen=True)
class RefineSettings:
    """Adaptive refinement after the planned trials (`scaling.study.refine`): up to `rounds`
    rounds, each adding at most `trials` trials per cell. trials = 0 disables it."""

    trials: int = 0
    rounds: int = 1

    @property
    def enabled(self) -> bool:
        return self.trials > 0 and self.rounds > 0


@dataclass(frozen=True)
class StudySpec:
    """A whole study: its cells (sizes x budgets), the decay search in each, the seeds, and
    the RunConfig settings fixed per spec (`run`) or per size (`per_size`)."""

    name: str
    path: str
    sizes: tuple[SizeSpec, ...]
    budgets: tuple[Budget, ...]
    decay: DecaySearch
    seeds: tuple[int, ...] = (0,)
    tasks: tuple[str, ...] | None = None  # None: RunConfig's default tasks
    per_size: dict[str, dict[str, Any]] = field(default_factory=dict)  # size -> {lr: .., ...}
    run: dict[str, Any] = field(default_factory=dict)  # any other RunConfig field
    storage: str | None = None
    worker: WorkerSettings = WorkerSettings()
    description: str = ""
    # Trials of one cell a worker trains together as one stacked model (`scaling.train.stacked`);
    # 1 trains one trial at a time.
    batch_models: int = 1
    # Budgets of one size from one run: a shared WSD stable phase and a cooldown branch per
    # budget (`scaling.train.cooldown`, Hagele et al. 2024); needs warmup_frac = 0 (docs/studies.md).
    cooldown_branches: bool = False
    # torch.compile the stacked units' training step (on CUDA with CUDA graphs: one launch per
    # step instead of hundreds). Like batch_models, how trials run, not what they are: results
    # equal eager ones to float rounding, and it is not part of a cell's identity.
    compile: bool = False
    plasticity: str = DEFAULT_PLASTICITY  # "nll" (ft_nll minimised) or "score" (ft_score maximised)
    refine: RefineSettings = RefineSettings()

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        """(metric, Optuna direction) of the study's two objectives: base loss, then plasticity."""
        return (("val_loss", "minimize"), PLASTICITY[self.plasticity])

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
        if self.decay.taus is not None:
            return len(self.decay.taus) * len(self.seeds)
        if self.decay.grid is not None:
            return len(self.decay.grid) * len(self.seeds)
        return override if override is not None else int(self.decay.n_trials or 0)

    def n_tokens(self, cell: Cell) -> int:
        """The tokens a trial of `cell` pretrains on (whole steps)."""
        from scaling.study.training import trained_tokens

        return trained_tokens(self.run_config(cell, 0.0, self.seeds[0]))

    def decay_of_tau(self, cell: Cell, tau_value: float) -> float:
        """The decay of `cell` whose timescale, with the peak lr, is `tau_value` (0 for inf)."""
        from scaling.core.budget import decay_for_tau

        config = self.run_config(cell, 0.0, self.seeds[0])
        return decay_for_tau(tau_value, config.batch_tokens, config.lr, self.n_tokens(cell), config.decay_mode)

    def decay_bounds(self, cell: Cell) -> tuple[float, float]:
        """The smallest and largest decay planned (or searched) in `cell`."""
        if self.decay.taus is not None:
            decays = [self.decay_of_tau(cell, t) for t in self.decay.taus]
            return min(decays), max(decays)
        return self.decay.bounds()

    def plan(self, n_trials: int | None = None, cell: Cell | None = None) -> tuple[PlannedTrial, ...]:
        """The trials every cell should run. A grid plans each (decay, seed) once; a sampler
        search plans `n_trials` slots whose seeds cycle through `seeds` (so seed noise reaches
        the sampler as noise instead of being averaged away). A timescale grid plans each
        (tau, seed) once, its decay computed for `cell` (None: decays left unset, keys only)."""
        if self.decay.taus is not None:
            return tuple(PlannedTrial(f"tau={t!r}/seed={s}", s, None if cell is None else self.decay_of_tau(cell, t), t)
                         for s in self.seeds for t in self.decay.taus)
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
