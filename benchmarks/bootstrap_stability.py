"""How many bootstrap refits make two seeds agree to 2 significant digits on the surface's intervals.

    python benchmarks/bootstrap_stability.py [K ...]

On Epoch AI's Chinchilla points (240 after dropping the five highest losses), fits with seeds 0
and 1 and reports, for each K, the 95% interval endpoints that disagree (scaling.fit.surface.
agree_to_digits) and the fit's own split-half warning. Results: docs/surface.md.
"""

import sys
import time
from pathlib import Path

import pandas as pd

from scaling.fit.surface import PARAMS, agree_to_digits, fit_loss_surface

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "chinchilla_epoch_svg_extracted.csv"

df = pd.read_csv(GOLDEN).sort_values("loss").iloc[:-5]
n, d, y = df["Model Size"], df["Training FLOP"] / (6 * df["Model Size"]), df["loss"]
for k in [int(a) for a in sys.argv[1:]] or [200, 500, 1000, 2000, 4000]:
    t0 = time.perf_counter()
    fits = [fit_loss_surface(n, d, y, n_bootstrap=k, seed=s) for s in (0, 1)]
    secs = (time.perf_counter() - t0) / 2
    bad = []
    for name in PARAMS:
        (l0, h0), (l1, h1) = fits[0].interval(name), fits[1].interval(name)
        if not (agree_to_digits(l0, l1) and agree_to_digits(h0, h1)):
            bad.append(f"{name} [{l0:.4g}, {h0:.4g}] vs [{l1:.4g}, {h1:.4g}]")
    warned = [any("unstable" in w for w in f.warnings) for f in fits]
    print(f"K={k}: {secs:.1f} s per fit; disagree: {'; '.join(bad) or 'none'}; split-half warning: {warned}", flush=True)
