"""Fits: pure maths from a trials table to typed results (no torch, no Optuna).

    from scaling.fit import fit_study
    fit = fit_study(pd.read_csv("results/quick/trials.csv"))
    print(fit.summary()); json.dump(fit.to_dict(), ...)

Building blocks, usable on their own: `fit_loss_surface` (Chinchilla approach 3),
`cell_optima` / `cell_estimates` (decay* and decay_tol per cell, paired bootstrap draws),
`fit_decay_law` (censored laws across cells), `backtest_law`. docs/fitting.md explains them.
"""

from scaling.fit.backtest import Backtest, BacktestCase, backtest_law
from scaling.fit.laws import Coefficient, DecayLaw, LawPrediction, fit_decay_law
from scaling.fit.claims import Claim
from scaling.fit.optima import CellOptimum, cell_estimates, cell_optima
from scaling.fit.studyfit import StudyFit, fit_study
from scaling.fit.surface import ComputeOptimal, LossSurface, fit_loss_surface
from scaling.fit.table import prepare_table, read_table

__all__ = [
    "Backtest",
    "BacktestCase",
    "CellOptimum",
    "Claim",
    "Coefficient",
    "ComputeOptimal",
    "DecayLaw",
    "LawPrediction",
    "LossSurface",
    "StudyFit",
    "backtest_law",
    "cell_estimates",
    "cell_optima",
    "fit_decay_law",
    "fit_loss_surface",
    "fit_study",
    "prepare_table",
    "read_table",
]
