"""The vectorised window scan: block bin counts and score sums, every close's windows of every size
(single, joint and covariance statistics), and the combined window statistic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from detectors.drift.callers import anonymous_caps, caller_square_sums_multi, keep_mask, variance_codes
from detectors.drift.covariance import cov_q, whitened
from detectors.drift.scores import joint_q, joint_z, window_z
from detectors.drift.settings import DriftSettings

CHUNK_BLOCKS = 40  # closes evaluated together (bounds the memory of the vectorised scan)


class ScanState(NamedTuple):
    """What the scan carries from one chunk to the next (see :func:`scan_chunk`)."""

    blocks: np.ndarray
    block_cs: np.ndarray
    block_sw: np.ndarray
    hist_codes: np.ndarray
    hist_keep: np.ndarray
    n_blocks: int
    block_pp: np.ndarray


def n_pp(model: dict[str, Any]) -> int:
    """Columns of the per-block covariance sums: the distinct products and their event count."""
    npp = len(model.get("cov_mu", ()))
    return npp + 1 if npp else 0


def cumrows(a: np.ndarray) -> np.ndarray:
    """Cumulative sums over rows with a leading zero row (``out[i] = a[:i].sum(0)``).

    Row by row, in the same order as ``np.cumsum(a, axis=0)`` (so the same result), but several
    times faster for the few-rows, many-columns arrays of block sums.
    """
    out = np.empty((len(a) + 1, a.shape[1]))
    out[0] = 0.0
    for i in range(len(a)):
        np.add(out[i], a[i], out=out[i + 1])
    return out


def scan_chunk(
    model: dict[str, Any],
    s: DriftSettings,
    bins_c: np.ndarray,
    codes_c: np.ndarray,
    state: ScanState,
    live: bool,
    keep_details: bool,
) -> tuple[dict[str, Any], ScanState]:
    """Evaluate the closes of whole blocks ``bins_c`` (a multiple of ``block_size`` events).

    ``state`` is ``(blocks, block_sums, block_kept, hist_codes, hist_keep, n_blocks, block_pp)``:
    kept-event bin counts, score sums and kept counts of the last blocks, caller codes and keep
    flags of the last ``hist_len`` events, the number of blocks before, and the last blocks'
    sums of whitened products with, as last column, their count (covariance test, which keeps
    one event per caller per super-block of ``cov_step`` events). Everything is vectorised over
    closes and window sizes.
    """
    step = s.block_size
    m = model
    blocks, block_cs, block_sw, h_codes, h_keep, n_blocks, block_pp = state
    nch, nb = len(m["names"]), s.n_bins_total
    n = len(codes_c)
    J = n // step
    W = len(s.window_sizes)
    anon_cap, anon_cap_cov = anonymous_caps(m, s.cov_caller_blocks, s.cov_step)
    keep_c = keep_mask(codes_c, step, s.block_cap, anon_cap=anon_cap)
    kidx = np.flatnonzero(keep_c)
    flat = (kidx // step)[:, None] * (nch * nb) + np.arange(nch, dtype=np.int64)[None, :] * nb + bins_c[kidx]
    new_blocks = np.bincount(flat.ravel(), minlength=J * nch * nb).reshape(J, nch, nb)
    # per-block score sums (exact: integer counts times grid scores), then window sums
    new_cs = np.einsum("jcb,cb->jc", new_blocks[:, m["chan"], :].astype(np.float64), m["tab"])
    allb = np.concatenate([blocks, new_blocks]) if len(blocks) else new_blocks
    allcs = np.concatenate([block_cs, new_cs]) if len(block_cs) else new_cs
    allsw = np.concatenate([block_sw, new_blocks[:, 0, :].sum(1)])
    nb0 = len(blocks)
    cum = cumrows(allcs)
    cum_sw = np.concatenate([[0], np.cumsum(allsw)])
    nh = len(h_codes)
    span_codes = np.concatenate([h_codes, codes_c])
    span_keep = np.concatenate([h_keep, keep_c])
    span_vcodes = variance_codes(span_codes, s.anonymous_run)
    r = int(m.get("cov_r", 0))
    if r:
        # super-blocks are aligned to monitored positions; the history reaches back far enough
        # that every event a window can contain sees the start of its super-block
        span_keep_cov = keep_mask(span_codes, s.cov_step, 1, offset=n_blocks * step - nh, anon_cap=anon_cap_cov)
        keep_cov = span_keep_cov[nh:]
        # only the events the test keeps (about a quarter) are Gaussianised and whitened
        # and only they enter the per-block sums of outer products: one batched GEMM over
        # blocks, each block's kept rows packed to the front (zero rows add exact zeros)
        kc = np.flatnonzero(keep_cov)
        kcnt = keep_cov.reshape(J, step).sum(1)
        width = max(int(kcnt.max()), 1)
        Yb = np.zeros((J, width, r))
        kb = kc // step
        Yb[kb, np.arange(len(kc)) - (np.cumsum(kcnt) - kcnt)[kb]] = whitened(bins_c[kc], m)
        iu = m["cov_iu"]
        new_pp = np.empty((J, iu.shape[1] + 1))
        np.take(np.matmul(Yb.transpose(0, 2, 1), Yb).reshape(J, r * r), iu[0] * r + iu[1], axis=1, out=new_pp[:, :-1])
        new_pp[:, -1] = kcnt
        allpp = np.concatenate([block_pp, new_pp]) if len(block_pp) else new_pp
        cum_pp = cumrows(allpp)
    else:
        allpp = np.zeros((len(allsw), 0))
    ends = nh + step * (1 + np.arange(J))
    cj = nb0 + 1 + np.arange(J)
    n_here = (n_blocks + 1 + np.arange(J)) * step
    colsum = np.empty((J, W, allcs.shape[1]))
    sw = np.empty((J, W))
    valid = np.empty((J, W), dtype=bool)
    # kept-event counts of the covariance test per window (its product sums are formed below,
    # only for the windows it tests)
    ppcnt = np.zeros((J, W))
    pplo = np.zeros((J, W), dtype=np.int64)
    a, a_cov = caller_square_sums_multi(
        span_vcodes, span_keep, ends, s.window_sizes, span_keep_cov if r else None,
        # a window shorter than the covariance test's minimum count is never tested by it
        sub_min_length=s.cov_min_events * r,
    )
    for w, L in enumerate(s.window_sizes):
        lo = np.maximum(cj - L // step, 0)
        colsum[:, w] = cum[cj] - cum[lo]
        sw[:, w] = cum_sw[cj] - cum_sw[lo]
        valid[:, w] = n_here >= L
        if r:
            ppcnt[:, w] = cum_pp[cj, -1] - cum_pp[lo, -1]
            pplo[:, w] = lo
    eff = sw**2 / np.maximum(a, 1.0)
    valid &= eff >= s.min_effective_callers
    z, zw = window_z(m, colsum.reshape(J * W, -1), sw.ravel(), a.ravel(), live)
    single = np.abs(z[:, m["tested"]]).max(1).reshape(J, W)
    q = joint_q(m, zw)
    if r:
        # too few kept events for r(r+1)/2 products: the statistic is not tested (reads 0)
        ok = np.flatnonzero(ppcnt.ravel() >= s.cov_min_events * r)
        q[:, -1] = 0.0
        if len(ok):
            pp_ok = cum_pp[np.repeat(cj, W)[ok]] - cum_pp[pplo.ravel()[ok]]
            q[ok, -1] = cov_q(m, pp_ok[:, :-1], pp_ok[:, -1], a_cov.ravel()[ok], live)
    q = q.reshape(J, W, -1)
    res: dict[str, Any] = {
        "single": single, "q": q, "valid": valid, "n_here": n_here, "ends": ends, "eff": eff, "sw": sw,
        "span_keep": span_keep,
    }
    if keep_details:
        res.update(z=z.reshape(J, W, -1), allb=allb, cj=cj)
        if r:  # product sums of one window are formed only when a finding explains it
            res.update(cum_pp=cum_pp, pplo=pplo)
    big = max(s.window_sizes)
    max_blocks = big // step
    new_state = ScanState(
        allb[-max_blocks:].copy(),
        allcs[-max_blocks:].copy(),
        allsw[-max_blocks:].copy(),
        span_codes[-s.hist_len :].copy(),
        span_keep[-s.hist_len :].copy(),
        n_blocks + J,
        allpp[-max_blocks:].copy(),
    )
    return res, new_state


def statistic(model: dict[str, Any], res: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: combined statistic (0 where untested) and joint |z|; per close: best window."""
    zeq = joint_z(model, res["q"])
    per_w = res["single"] if zeq.shape[-1] == 0 else np.maximum(res["single"], zeq.max(-1))
    per_w = np.where(res["valid"], per_w, 0.0)
    return per_w, zeq, np.argmax(per_w, axis=1)


def empty_state(model: dict[str, Any], n_bins_total: int) -> ScanState:
    """The scan state before the first block."""
    return ScanState(
        np.zeros((0, len(model["names"]), n_bins_total), np.int64),
        np.zeros((0, len(model["chan"]))),
        np.zeros(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, bool),
        0,
        np.zeros((0, n_pp(model))),
    )
