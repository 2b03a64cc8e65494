"""How much of a normal location or scale change the binned drift scores keep, per bin layout.

``drift`` scores every numeric channel through reference-quantile bins: the location score is the
bin's centred mid-rank, the spread score the squared normal score of that mid-rank (Klotz-type).
Binning loses information; for normal data the share kept is the squared correlation between the
binned score and the optimal one (``z`` for a location shift, ``z^2`` for a scale change), i.e. the
score's asymptotic relative efficiency. Computed exactly from the normal distribution, no sampling.

Run: ``.venv/bin/python benchmarks/drift_bin_efficiency.py``
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from detectors.drift.reference import bin_levels


def efficiencies(levels: np.ndarray) -> tuple[float, float]:
    """(location, spread) efficiency of the binned scores with interior cut probabilities ``levels``."""
    cuts = np.concatenate([[0.0], levels, [1.0]])
    z = norm.ppf(cuts)
    prob = np.diff(cuts)
    dens = norm.pdf(z)
    zf = np.where(np.isfinite(z), z, 0.0)
    mean_z = (dens[:-1] - dens[1:]) / prob  # E[z | bin]
    mean_z2 = 1.0 + (zf[:-1] * dens[:-1] - zf[1:] * dens[1:]) / prob  # E[z^2 | bin]
    mid = 0.5 * (cuts[:-1] + cuts[1:])
    out = []
    for score, target, target_var in ((mid - 0.5, mean_z, 1.0), (norm.ppf(mid) ** 2, mean_z2 - 1.0, 2.0)):
        centred = score - (prob * score).sum()
        cov = (prob * centred * target).sum()
        out.append(float(cov**2 / (prob * centred**2).sum() / target_var))
    return out[0], out[1]


def main() -> None:
    print("| bins | layout | location efficiency | spread efficiency |")
    print("|---|---|---|---|")
    for n_bins in (16, 21, 32, 64):
        loc, spr = efficiencies(bin_levels(n_bins, 0.0))
        print(f"| {n_bins} | equal probability | {loc:.3f} | {spr:.3f} |")
    for span in (2.0, 2.33, 2.58):
        loc, spr = efficiencies(bin_levels(16, span))
        print(f"| 16 | normal scores on +-{span} (outer bins {norm.cdf(-span):.1%}) | {loc:.3f} | {spr:.3f} |")


if __name__ == "__main__":
    main()
