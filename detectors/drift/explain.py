"""What a finding says and what dashboards plot: a window's explanation (top channels, joint tests,
covariance pairs, top callers, one summary line) and its per-channel window statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import WindowStat, with_rfc3339
from detectors.drift.callers import ANONYMOUS, merge_anonymous
from detectors.drift.channels import numeric_names
from detectors.drift.settings import DriftSettings
from detectors.drift.summaries import prob_mean, summaries
from pipeline.events import FeatureSchema


def window_info(
    model: dict[str, Any], s: DriftSettings, res: dict[str, Any], zeq: np.ndarray, j: int, w: int
) -> dict[str, Any]:
    """What an explanation needs of window ``w`` at close ``j`` of a scanned chunk ``res``."""
    cj, kb = int(res["cj"][j]), s.window_sizes[w] // s.block_size
    return {
        "effective_callers": float(res["eff"][j, w]),
        "counts": res["allb"][max(cj - kb, 0) : cj].sum(0).astype(np.float64),
        "joint_z": zeq[j, w],
        "joint_q": res["q"][j, w],
        "single": float(res["single"][j, w]),
        "cov_mean": (
            (res["cum_pp"][cj, :-1] - res["cum_pp"][res["pplo"][j, w], :-1])
            / max(float(res["cum_pp"][cj, -1] - res["cum_pp"][res["pplo"][j, w], -1]), 1.0)
            if "cum_pp" in res and model.get("cov_r") else None
        ),
    }


def top_callers(codes: np.ndarray, cmap: dict[str, int], k: int = 3) -> list[dict[str, Any]]:
    """The callers with the largest share of a window's events (all events, kept or not).

    Computed only when a finding is raised: a drift that is one caller's own traffic (an
    attacker, a batch job) should say so. Anonymous events are listed together, as one sender
    with ``client_id`` null.
    """
    named = merge_anonymous(codes)
    if len(codes) == 0:
        return []
    uniq, cnt = np.unique(named, return_counts=True)
    # candidates: every caller tied with the k-th largest count; ties broken by name (codes
    # depend on when the caller table was pruned, names do not)
    cut = np.sort(cnt)[::-1][min(k, len(cnt)) - 1]
    cand = np.flatnonzero(cnt >= cut)
    wanted = {int(uniq[i]) for i in cand}
    rev: dict[int, str | None] = {v: c for c, v in cmap.items() if v in wanted}
    rev[ANONYMOUS] = None  # anonymous events counted as one caller: sorts first among ties
    rows = sorted(((-int(cnt[i]), rev.get(int(uniq[i]), f"#{int(uniq[i])}")) for i in cand),
                  key=lambda r: (r[0], r[1] is not None, r[1] or ""))[:k]
    return [{"client_id": name, "events": -neg, "share": round(-neg / len(codes), 4)} for neg, name in rows]


def explain(
    model: dict[str, Any],
    s: DriftSettings,
    z: np.ndarray,
    info: dict[str, Any],
    stat: float,
    L: int,
    n_mon_here: int,
    *,
    threshold: float,
    calibration: dict[str, Any],
    config_hash: str,
    schema: FeatureSchema,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A finding's explanation of window scores ``z`` (see ``docs/drift.md``, JSON-serialisable)."""
    m = model
    names = m["names"]
    labels = m["labels"]
    az = np.abs(z)
    per_chan = np.zeros(len(names))
    np.maximum.at(per_chan, m["chan"], az)
    order = np.argsort(-per_chan, kind="stable")[: s.top_k]
    counts = info["counts"]
    med, spread, ks = summaries(m, counts, s.n_bins)
    top: list[dict[str, Any]] = []
    n_num = m["n_num"]
    for c in order:
        c = int(c)
        cols = np.flatnonzero(m["chan"] == c)
        col = int(cols[np.argmax(az[cols])])
        entry: dict[str, Any] = {
            "stat": names[c],
            "score": round(float(per_chan[c]), 4),
            "test": labels[col],
            "z": round(float(z[col]), 4),
        }
        if names[c].startswith("multivariate:pc"):
            load = m["pca_basis"][:, int(names[c][15:])]
            feats = numeric_names(schema, m["d"])
            entry["loadings"] = {feats[i]: _r(load[i]) for i in np.argsort(-np.abs(load))[:3]}
        if c < n_num:
            entry["reference"] = {"median": _r(m["ref_loc"][c]), "spread": _r(m["ref_spread"][c])}
            entry["current"] = {"median": _r(med[c]), "spread": _r(spread[c])}
            entry["ks_distance"] = _r(ks[c])
            i_p = c - m.get("prob_chan0", -1)
            if m.get("prob_chan0", -1) >= 0 and 0 <= i_p < len(m["prob_classes"]):
                entry["reference"]["mean"] = _r(m["prob_refmean"][i_p])
                entry["current"]["mean"] = _r(prob_mean(m, counts[c], i_p, s.n_bins))
            mcol = [k for k in cols if labels[k] == "missing"]
            if mcol:
                k = int(mcol[0])
                entry["reference"]["missing_rate"] = _r(m["mu"][k])
                entry["current"]["missing_rate"] = _r(counts[c, s.missing_bin] / max(counts[c].sum(), 1e-12))
        else:
            cat_cols = [int(k) for k in cols]
            tot = max(counts[c].sum(), 1e-12)
            ref_f = {labels[k][9:]: _r(m["mu"][k]) for k in cat_cols}
            cur_f = {}
            for k in cat_cols:
                tabk = m["tab"][k]
                cur_f[labels[k][9:]] = _r(float((counts[c] * tabk).sum() / tot))
            entry["reference"] = {"frequencies": ref_f}
            entry["current"] = {"frequencies": cur_f}
            entry["total_variation"] = _r(0.5 * sum(abs((cur_f[k] or 0.0) - (ref_f[k] or 0.0)) for k in ref_f))
        top.append(entry)
    joint = []
    for g, gname in enumerate(m["group_names"]):
        joint.append(
            {
                "test": gname,
                "z": _r(info["joint_z"][g]),
                "chi2": _r(info["joint_q"][g] / m["group_gc"][g]),
                "dof": int(m["group_dof"][g]),
                "genomic_control": _r(m["group_gc"][g]),
            }
        )
    joint.sort(key=lambda t: -(t["z"] or 0.0))
    pairs = covariance_pairs(m, info.get("cov_mean"), s.top_k, schema)
    trigger = "single"
    if len(joint) and joint[0]["z"] is not None and joint[0]["z"] >= info["single"]:
        trigger = joint[0]["test"]
    else:
        tested = np.where(m["tested"], az, -1.0)
        col = int(np.argmax(tested))
        trigger = f"{names[int(m['chan'][col])]} ({labels[col]})"
    callers = list(info.get("top_callers", []))
    summary = summary_line(trigger, pairs if trigger == "inputs:covariance" else top, stat, L, threshold)
    if callers and callers[0]["share"] >= 0.2:
        who = callers[0]["client_id"]
        summary += (f"; caller {who} sent" if who is not None else "; events without client_id made") + (
            f" {callers[0]['share']:.0%} of the window"
        )
    return {
        "summary": summary,
        "trigger_test": trigger,
        "statistic": round(stat, 4),
        "threshold": round(float(threshold), 4),
        "statistic_definition": (
            "max over tests and window sizes of |z|: single tests' standardised scores, joint tests' "
            "chi-square statistics converted to the |z| of equal two-sided tail probability"
        ),
        "joint_tests": joint,
        "window_events": int(L),
        "window_sizes": list(s.window_sizes),
        "block_size": s.block_size,
        "effective_callers": round(float(info.get("effective_callers", 0.0)), 2),
        "top_callers": callers,
        "events_since_reference": int(n_mon_here),
        "top": top,
        "covariance": pairs,
        "reference_period": with_rfc3339(m["ref_period"]),
        "config_hash": config_hash,
        "events_between_false_alarms": s.budget,
        "false_alarm_budget": budget,
        "calibration": dict(calibration),
    }


def covariance_pairs(
    model: dict[str, Any], cov_mean: np.ndarray | None, top_k: int, schema: FeatureSchema
) -> list[dict[str, Any]]:
    """Feature pairs whose correlation (of Gaussianised scores) moved most in the window."""
    m = model
    if cov_mean is None or not m.get("cov_r"):
        return []
    r = int(m["cov_r"])
    My = np.zeros((r, r))
    iu = m["cov_iu"]
    My[iu[0], iu[1]] = cov_mean
    My[iu[1], iu[0]] = cov_mean
    A = m["cov_a"]
    Mg = A @ My @ A.T

    def corr(M: np.ndarray) -> np.ndarray:
        s = np.sqrt(np.maximum(np.diag(M), 1e-12))
        return np.asarray(M / np.outer(s, s))

    cur, ref = corr(Mg), corr(m["cov_ref"])
    i, j = np.triu_indices(len(cur), 1)
    delta = np.abs(cur[i, j] - ref[i, j])
    feats = numeric_names(schema, m["d"])
    out = []
    for k in np.argsort(-delta, kind="stable")[:top_k]:
        a, b = int(i[k]), int(j[k])
        out.append(
            {"features": [feats[a], feats[b]], "reference_corr": _r(ref[a, b]), "current_corr": _r(cur[a, b])}
        )
    return out


def summary_line(trigger: str, top: list[dict[str, Any]], stat: float, L: int, threshold: float) -> str:
    """One human line: what moved, by how much, window, statistic vs threshold."""
    parts = []
    for e in top[:4]:
        if "features" in e:
            parts.append(
                f"corr({e['features'][0]}, {e['features'][1]}) {e['reference_corr'] or 0:+.2f} -> "
                f"{e['current_corr'] or 0:+.2f}"
            )
            continue
        nm = e["stat"].split(":", 1)[1] if ":" in e["stat"] else e["stat"]
        if "mean" in e.get("reference", {}) and e["reference"]["mean"] is not None:
            parts.append(f"{nm} {e['reference']['mean']:.2f} -> {e['current'].get('mean') or 0:.2f}")
        elif "ks_distance" in e:
            ref, cur = e["reference"], e["current"]
            bits = []
            if ref.get("spread") and cur.get("median") is not None and ref.get("median") is not None:
                bits.append(f"{(cur['median'] - ref['median']) / ref['spread']:+.1f} sd")
            if ref.get("spread") and cur.get("spread") is not None and e["test"] == "spread":
                bits.append(f"spread x{cur['spread'] / ref['spread']:.2f}")
            if e["test"] == "missing":
                bits.append(f"missing {ref.get('missing_rate', 0):.1%} -> {cur.get('missing_rate', 0):.1%}")
            bits.append(f"KS {e['ks_distance'] or 0:.2f}")
            parts.append(f"{nm} ({', '.join(bits)})")
        elif "total_variation" in e:
            ref_f, cur_f = e["reference"]["frequencies"], e["current"]["frequencies"]
            k = max(ref_f, key=lambda c: abs((cur_f.get(c) or 0) - (ref_f.get(c) or 0)))
            parts.append(
                f"{nm} (TV {e['total_variation']:.2f}; {k}: {ref_f[k] or 0:.0%} -> {cur_f.get(k) or 0:.0%})"
            )
        else:
            parts.append(f"{nm} (z {e['z']:+.1f})")
    what = {
        "inputs:location": "input locations (joint test)",
        "inputs:spread": "input spreads (joint test)",
        "outputs:summaries": "confidence/margin/entropy (joint test)",
        "outputs:probabilities": "class probabilities (joint test)",
        "output:prediction:mix": "predicted-class mix (joint test)",
        "inputs:covariance": "input correlations (covariance test)",
    }.get(trigger, trigger)
    return (
        f"drift in {what}: {', '.join(parts)}; window {L} events; "
        f"statistic {stat:.2f} > threshold {float(threshold):.2f}"
    )


def window_stats(
    model: dict[str, Any],
    s: DriftSettings,
    detector: str,
    z: np.ndarray,
    info: dict[str, Any],
    window: int,
    start: float,
    end: float,
    best: float,
    threshold: float,
) -> list[WindowStat]:
    """Dashboard rows of the largest window at a close: every channel's max |z| (with current median
    and spread for numeric ones), every joint test's |z|, and the combined statistic."""
    m = model
    names = m["names"]
    per_chan = np.zeros(len(names))
    np.maximum.at(per_chan, m["chan"], np.abs(z))
    med, spread, _ = summaries(m, info["counts"], s.n_bins)
    n_num = m["n_num"]
    L = max(s.window_sizes)
    h = float(threshold)
    out = [
        WindowStat(
            detector,
            names[c],
            window,
            start,
            end,
            L,
            float(med[c]) if c < n_num else None,
            float(spread[c]) if c < n_num else None,
            float(per_chan[c]),
            h,
        )
        for c in range(len(names))
    ]
    for g, gname in enumerate(m["group_names"]):
        out.append(WindowStat(detector, f"joint:{gname}", window, start, end, L, None, None, float(info["joint_z"][g]), h))
    out.append(WindowStat(detector, "drift", window, start, end, L, None, None, float(best), h))
    return out


def _r(x: float) -> float | None:
    """``x`` rounded to 6 decimals for JSON (``None`` when not finite)."""
    v = float(x)
    return None if not np.isfinite(v) else round(v, 6)
