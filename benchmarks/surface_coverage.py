"""Coverage of the surface's intervals in simulation at the measured noise (sd 0.02 on val_loss).

    python benchmarks/surface_coverage.py [REPLICATES] [REFITS]

Each replicate draws a study-like table (6 sizes x 5 TPPs from a known surface, plus normal noise of
sd 0.02), fits it with the bootstrap, and checks whether the truth lies in the 90% intervals of E,
alpha and beta, whether a new run (truth + fresh noise) at an in-range (N, D) lies in the 90% new-run
interval, and the same at 4x the largest N. Results: docs/surface.md.
"""

import sys

import numpy as np

from scaling.fit.predict import predict_loss
from scaling.fit.surface import fit_loss_surface

TRUTH = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.37}
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
refits = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def surface(n, d):
    return TRUTH["E"] + TRUTH["A"] * n ** -TRUTH["alpha"] + TRUTH["B"] * d ** -TRUTH["beta"]


rng = np.random.default_rng(0)
n_grid, tpps = np.geomspace(1e6, 3e8, 6), np.array([5.0, 10.0, 20.0, 50.0, 100.0])
n = np.repeat(n_grid, tpps.size)
d = n * np.tile(tpps, n_grid.size)
hits = {"E": 0, "alpha": 0, "beta": 0, "new run in range": 0, "new run at 4x N": 0}
for rep in range(reps):
    y = surface(n, d) + rng.normal(0, 0.02, n.size)
    fit = fit_loss_surface(n, d, y, n_bootstrap=refits, seed=rep, ci_level=0.9)
    for name in ("E", "alpha", "beta"):
        lo, hi = fit.interval(name)
        hits[name] += lo <= TRUTH[name] <= hi
    for key, (nn, dd) in {"new run in range": (3e7, 6e8), "new run at 4x N": (1.2e9, 2.4e10)}.items():
        p = predict_loss(fit, nn, dd, level=0.9)
        hits[key] += p.pi[0] <= surface(nn, dd) + rng.normal(0, 0.02) <= p.pi[1]
print(f"{reps} replicates, {refits} refits, nominal 90%: " + ", ".join(f"{k} {v / reps:.0%}" for k, v in hits.items()))
