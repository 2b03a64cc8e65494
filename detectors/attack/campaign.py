"""Per-caller stateful detection of query-based black-box attack campaigns.

Method
------
Query-based attacks (HopSkipJump, Boundary, Square, random search, ...) need many queries that
are small perturbations of one another: binary searches along a line, gradient estimates around
a boundary point, random steps from the current candidate. Natural traffic does not look like
that: two inputs of one caller are either unrelated or *exactly* the same (a client retry, a
health-check canary). Following Chen et al. ("Stateful detection of black-box adversarial
attacks") and Blacklight, each caller keeps a bounded history of its last ``history`` queries as
compact fingerprints, and each query is compared with them:

* fingerprint: robust standardisation (median/IQR of the first ``scale_events`` events of the
  route), clipping, and a seeded Gaussian random projection to ``dims`` dimensions stored as
  float16 (``history * dims * 2`` bytes per caller). Distances are RMS per original feature;
* a query is a **distinct near-duplicate** when some query in the history is within
  ``radius`` of it but not identical (the *radius rule*: dense small steps, HopSkipJump, Boundary),
  or, by the *sparse rule*, equal to one of them in all but at most ``sparse`` coordinates and an
  exact repeat of none (random search, Square, SimBA: a few features moved far per query, an RMS
  step well above the radius). Exact repeats are ignored: retries and canaries are benign, an
  attack needs *new* points;
* sparse fingerprint: each raw value hashed to one byte (NaN/missing included; unequal values
  collide with probability 1/256), features beyond ``sparse_width`` folded into ``sparse_width``
  groups (``history * ceil8(min(d, sparse_width))`` bytes per caller, ``ceil8`` rounding up to a
  multiple of 8); the differing-byte count is then the number of differing features (of feature
  groups, when folded; never more);
* the caller's statistic is the number of distinct near-duplicates among its last
  ``window`` queries (the current one included; one flag byte per query is kept). It is an integer computed per event, so it
  does not depend on batch boundaries. When it reaches ``threshold`` at a near-duplicate
  query, an ``attack_campaign`` alert is raised at that query.

``radius`` defaults to ``radius_factor`` times the 1st percentile of the nearest-neighbour
distances among the first ``scale_events`` events of the route (each compared with the
``history`` events before it, exact repeats ignored), i.e. well below the distances at which
natural inputs come close to each other. ``sparse`` defaults to ``floor(sparse_factor * q)``, ``q``
the 1st percentile of the same events' nearest-neighbour *differing-coordinate counts* (exact
repeats ignored), capped at ``floor(max_sparse_share * d)``: natural inputs differ from their
nearest of ``history`` unrelated ones in far more coordinates than that, and the cap keeps "a few"
a few on wide data. Data so discrete (integer codes, point masses) that natural neighbours differ in
one coordinate (``q <= 1``), and routes with fewer than ``1 / max_sparse_share`` features, get
``sparse = 0``: the sparse rule is off and only the radius rule counts. No reference period is
needed otherwise: callers are scored from their first query (the first ``scale_events`` events of a route are held back
until the scale is known and then scored in order).

Alerts: one per campaign per caller. ``window_start`` is the ts of the campaign's first
near-duplicate, ``event_ids`` its first ``max_evidence`` near-duplicate queries (the trigger
always included). Every ``update_every`` further near-duplicates an update with the same trigger
(``is_update=True``) moves ``window_end``. A caller whose last near-duplicate is more than
``campaign_gap`` seconds old starts a new campaign. The share of near-duplicates answered with a
low margin (below the 10th percentile of the first events) is reported: boundary-walking attacks
concentrate there, and it sets the severity to critical when at least half of them are.

Memory: per caller ``history * (dims * 2 + ceil8(min(d, sparse_width))) + window + 66`` bytes (642 at
10-16 features, 770 from 17 on; 378 before the sparse rule) in numpy arrays plus one dict entry; no
sparse fingerprints (386 bytes) where the rule cannot be on (``sparse=0``, or fewer than
``1 / max_sparse_share`` features);
at most ``max_callers`` callers (idle ones expire after ``ttl`` seconds of event time, callers
with near-duplicates after ``suspicious_ttl``; when full, the least recently active callers
without near-duplicates are evicted first). Events without ``client_id`` are not scored.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from detectors.attack._sparse import NONE, ValueHasher, fewest_differing
from detectors.attack.callers import (
    CallerTable,
    caller_codes,
    first_occurrences,
    make_layout,
    ring_advance,
    ring_write,
    window_index,
)
from detectors.attack.reference import WarmupBuffer, take_batch
from detectors.attack.scaling import robust_scale, standardise
from detectors.base import (
    EMPTY_OUTPUT,
    Detector,
    DetectorContext,
    DetectorOutput,
    Finding,
    FlaggedEvent,
    Kind,
    Severity,
    register,
    time_at,
)
from pipeline.events import EventBatch


def nn_distances(Yw: np.ndarray, y: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances of ``y`` (n, p) to its windows ``Yw`` (n, K, p, float32; overwritten) and
    exact repeats."""
    diff = np.subtract(Yw, y.astype(np.float32)[:, None, :], out=Yw if Yw.dtype == np.float32 else None)
    d2 = np.einsum("nkp,nkp->nk", diff, diff)
    exact = valid & (d2 == 0.0)
    np.copyto(d2, np.inf, where=~valid | exact)
    return d2, exact


@register
class CampaignDetector(Detector):
    """Per-caller detector of query-based black-box attack campaigns (distinct near-duplicates).

    Parameters
    ----------
    context : DetectorContext
        Route, schema and seed (the seed draws the random projection).
    scale_events : int, default 500
        First events of the route used to estimate feature scales and the default radius.
    history : int, default 16
        Fingerprints remembered per caller (each query is compared with these).
    window : int, default 64
        Queries over which near-duplicates are counted.
    dims : int, default 8
        Random-projection dimensions of a fingerprint.
    threshold : int, default 8
        Distinct near-duplicates among the last ``window`` queries that raise an alert.
    radius : float or None, default None
        Near-duplicate radius (RMS of robust-standardised feature differences); None = automatic.
    radius_factor : float, default 0.5
        Automatic radius as a multiple of the 1st percentile of first-event NN distances.
    max_radius : float, default 0.5
        Upper bound of the automatic radius.
    max_evidence : int, default 50
        Cap on the event ids an alert carries.
    update_every : int, default 100
        Near-duplicates between alert updates.
    campaign_gap : float, default 3600.0
        Seconds without near-duplicates after which a caller's next one starts a new campaign.
    max_callers : int, default 1_000_000
        Caller rows kept at most.
    ttl, suspicious_ttl : float, default 86400.0 and 604800.0
        Idle time (event time) after which a caller's state is dropped.
    clip : float, default 50.0
        Standardised values are clipped to +-clip before projection.
    sparse : int or None, default None
        Sparse rule: a query equal to a remembered one in all but at most ``sparse`` coordinates
        (and not identical) is a near-duplicate; None = automatic, 0 = off.
    sparse_factor : float, default 0.5
        Automatic ``sparse`` as a multiple (floored) of the 1st percentile of first-event
        nearest-neighbour differing-coordinate counts.
    max_sparse_share : float, default 0.1
        Upper bound of the automatic ``sparse`` as a share (floored) of the number of features.
    sparse_width : int, default 24
        Bytes of a sparse fingerprint (features beyond it are folded into groups).

    Examples
    --------
    A caller that walks in small steps is flagged; one that sends fresh inputs is not.

    >>> from pipeline.events import batch_from_arrays, FeatureSchema, RouteKey
    >>> rng = np.random.default_rng(0)
    >>> ctx = DetectorContext(RouteKey("m", None), FeatureSchema(tuple(f"f{i}" for i in range(8))))
    >>> det = CampaignDetector(ctx)
    >>> benign = rng.normal(size=(600, 8))
    >>> walk = rng.normal(size=8) + np.cumsum(0.01 * rng.normal(size=(40, 8)), axis=0)
    >>> X = np.vstack([benign, walk])
    >>> clients = [f"b{i % 20}" for i in range(600)] + ["mallory"] * 40
    >>> out = det.process(batch_from_arrays(X, client_ids=clients))
    >>> [(f.client_id, f.trigger_event_id) for f in out.findings]
    [('mallory', 'e608')]
    """

    name: ClassVar[str] = "campaign"
    state_version: ClassVar[int] = 2

    def __init__(
        self,
        context: DetectorContext,
        *,
        scale_events: int = 500,
        history: int = 16,
        window: int = 64,
        dims: int = 8,
        threshold: int = 8,
        radius: float | None = None,
        radius_factor: float = 0.5,
        max_radius: float = 0.5,
        max_evidence: int = 50,
        update_every: int = 100,
        campaign_gap: float = 3600.0,
        max_callers: int = 1_000_000,
        ttl: float = 86400.0,
        suspicious_ttl: float = 604800.0,
        clip: float = 50.0,
        sparse: int | None = None,
        sparse_factor: float = 0.5,
        max_sparse_share: float = 0.1,
        sparse_width: int = 24,
    ) -> None:
        if scale_events < 20:
            raise ValueError("scale_events must be >= 20")
        if not 2 <= history <= 255:
            raise ValueError("history must be in [2, 255]")
        if dims < 1:
            raise ValueError("dims must be >= 1")
        if not 2 <= window <= 255 or not 1 <= threshold <= window:
            raise ValueError("need 2 <= window <= 255 and 1 <= threshold <= window")
        if radius is not None and radius <= 0:
            raise ValueError("radius must be > 0 or None")
        if radius_factor <= 0 or max_radius <= 0:
            raise ValueError("radius_factor and max_radius must be > 0")
        if max_evidence < 1 or update_every < 1:
            raise ValueError("max_evidence and update_every must be >= 1")
        if campaign_gap <= 0 or ttl <= 0 or suspicious_ttl <= 0:
            raise ValueError("campaign_gap, ttl and suspicious_ttl must be > 0")
        if max_callers < 1:
            raise ValueError("max_callers must be >= 1")
        if clip <= 0 or clip > 1000:
            raise ValueError("clip must be in (0, 1000] (fingerprints are float16)")
        if sparse is not None and sparse < 0:
            raise ValueError("sparse must be >= 0 or None")
        if sparse_factor <= 0 or not 0 <= max_sparse_share < 1:
            raise ValueError("need sparse_factor > 0 and 0 <= max_sparse_share < 1")
        if not 1 <= sparse_width <= 128:
            raise ValueError("sparse_width must be in [1, 128]")
        super().__init__(
            context, scale_events=scale_events, history=history, window=window, dims=dims, threshold=threshold,
            radius=radius, radius_factor=radius_factor, max_radius=max_radius,
            max_evidence=max_evidence, update_every=update_every, campaign_gap=campaign_gap,
            max_callers=max_callers, ttl=ttl, suspicious_ttl=suspicious_ttl, clip=clip,
            sparse=sparse, sparse_factor=sparse_factor, max_sparse_share=max_sparse_share,
            sparse_width=sparse_width,
        )
        self.scale_events = scale_events
        self.K = history
        self.Wn = window
        self.dims = dims
        self.T = threshold
        self.radius_param = radius
        self.radius_factor = radius_factor
        self.max_radius = max_radius
        self.max_evidence = max_evidence
        self.update_every = update_every
        self.campaign_gap = campaign_gap
        self.clip = clip
        self.sparse_param = sparse
        self.sparse_factor = sparse_factor
        self.max_sparse_share = max_sparse_share
        d = context.schema.n_numeric
        self._hasher = ValueHasher(d, sparse_width, context.seed)
        self.sparse_k = 0
        self.sparse_q01 = float("nan")
        self._buf = WarmupBuffer(scale_events, d)
        rng = np.random.default_rng([context.seed, 0xCA3])
        self.R = rng.normal(size=(d, dims)) / np.sqrt(dims)
        self.center = np.zeros(d)
        self.scale = np.ones(d)
        self.radius = float("nan")
        self.margin_low = float("nan")
        self.ready = False
        self.table = CallerTable(
            max_callers, ttl, suspicious_ttl,
            {
                "hist": ((history, dims), np.float16, 0),
                "shash": ((history, self._hasher.stored if self._sparse_possible(d) else 0), np.uint8, 0),
                "nd": ((window,), np.uint8, 0),
                "head": ((), np.int32, 0),
                "len": ((), np.int32, 0),
                "nhead": ((), np.int32, 0),
                "nd_sum": ((), np.int16, 0),
                "nlen": ((), np.int32, 0),
                "n_q": ((), np.int64, 0),
                "camp_nd": ((), np.int32, 0),
                "camp_lowm": ((), np.int32, 0),
                "camp_rad": ((), np.int32, 0),
                "camp_sp": ((), np.int32, 0),
                "first_susp": ((), np.float64, np.nan),
                "last_susp": ((), np.float64, np.nan),
            },
            on_reset=self._on_reset,
        )
        # small Python records for callers with a live campaign only
        self._evidence: dict[int, list[str]] = {}
        self._alerts: dict[int, dict[str, Any]] = {}

    def _sparse_possible(self, d: int) -> bool:
        """Whether the sparse rule can be on (else no fingerprints are stored)."""
        if self.sparse_param is not None:
            return self.sparse_param > 0
        return int(np.floor(self.max_sparse_share * d)) >= 1

    def _on_reset(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            self._evidence.pop(s, None)
            self._alerts.pop(s, None)

    # ---------------------------------------------------------------------------------------
    def _project(self, X: np.ndarray) -> np.ndarray:
        return (standardise(X, self.center, self.scale, self.clip) @ self.R).astype(np.float16)

    def _fit(self) -> None:
        X = self._buf.X
        self.center, self.scale = robust_scale(X)
        Y = self._project(X)
        d = max(X.shape[1], 1)
        # nearest neighbour of each first event among the `history` events before it
        lay = make_layout(np.zeros(len(Y), dtype=np.int64))
        head = np.zeros(1, dtype=np.int32)
        ln = np.zeros(1, dtype=np.int32)
        idx = window_index(lay, head, ln, self.K)
        if self.radius_param is None:
            ring = np.zeros((1, self.K, self.dims), dtype=np.float16)
            d2, _ = nn_distances(idx.gather(ring, Y, lay, np.float32), Y, idx.valid)
            nn = np.sqrt(d2.min(axis=1) / d)
            nn = nn[np.isfinite(nn)]
            q = float(np.quantile(nn, 0.01)) if nn.size else self.max_radius
            self.radius = float(min(self.max_radius, self.radius_factor * q))
        else:
            self.radius = float(self.radius_param)
        if self.sparse_param != 0:
            H = self._hasher(X)
            ring8 = np.zeros((1, self.K, H.shape[1]), dtype=np.uint8)
            m = fewest_differing(idx.gather(ring8, H, lay), H, idx.valid)
            m = m[m != NONE]
            self.sparse_q01 = float(np.quantile(m, 0.01)) if m.size else float("nan")
        if self.sparse_param is not None:
            self.sparse_k = int(self.sparse_param)
        elif np.isfinite(self.sparse_q01):
            cap = int(np.floor(self.max_sparse_share * X.shape[1]))
            self.sparse_k = max(0, min(int(np.floor(self.sparse_factor * self.sparse_q01)), cap))
        else:
            self.sparse_k = 0
        mg = self._buf.margin[np.isfinite(self._buf.margin)]
        self.margin_low = float(np.quantile(mg, 0.1)) if mg.size else float("nan")
        self.ready = True

    def process(self, batch: EventBatch) -> DetectorOutput:
        if not self.ready:
            consumed = self._buf.add(batch)
            if not self._buf.full:
                return EMPTY_OUTPUT
            self._fit()
            held = self._buf.as_batch(batch)
            self._buf.clear()
            out1 = self._process(held)
            if consumed >= len(batch):
                return out1
            out2 = self._process(take_batch(batch, np.arange(consumed, len(batch))))
            return DetectorOutput.merge([out1, out2])
        return self._process(batch)

    def _process(self, batch: EventBatch) -> DetectorOutput:
        codes, callers = caller_codes(batch.client_ids)
        rows = np.flatnonzero(codes >= 0)
        if rows.size == 0:
            return EMPTY_OUTPUT
        codes = codes[rows]
        ts = batch.ts[rows]
        first_idx = first_occurrences(codes)
        tab = self.table
        cslots = tab.assign(callers, ts[first_idx])
        A = tab.arrays
        lay = make_layout(cslots[codes])
        order = lay.order
        Ys = self._project(batch.X[rows[order]])
        idx = window_index(lay, A["head"], A["len"], self.K)
        valid = idx.valid
        d2, exact = nn_distances(idx.gather(A["hist"], Ys, lay, np.float32), Ys, valid)
        dmin2 = d2.min(axis=1)
        d = max(batch.X.shape[1], 1)
        # an exact repeat of a recent query (a retry, a canary) is never a near-duplicate, even when
        # it is also close to another query (a corrected record, retried): an attack needs new points
        repeat = exact.any(axis=1)
        nd = nd_r = (dmin2 < (self.radius**2) * d) & ~repeat
        Hs = smin = None
        if self.sparse_k > 0:
            Hs = self._hasher(batch.X[rows[order]])
            smin = fewest_differing(idx.gather(A["shash"], Hs, lay), Hs, valid)
            nd = nd_r | (smin <= self.sparse_k)
        ndu = nd.astype(np.uint8)
        # near-duplicate count over the window; only callers with a flag in their ring or in
        # this batch can have a non-zero count (a caller's flag ring is all zeros otherwise)
        count = ndu.astype(np.int64)
        g_any = np.add.reduceat(ndu, lay.group_starts) > 0
        active = np.repeat(g_any | (A["nd_sum"][lay.group_slots] > 0), lay.group_sizes)
        if active.any():
            sel = np.flatnonzero(active)
            widx = window_index(lay, A["nhead"], A["nlen"], self.Wn, sel=sel)
            win = widx.gather(A["nd"], ndu, lay)
            count[sel] += (win[:, 1:] * widx.valid[:, 1:]).sum(axis=1, dtype=np.int64)
        # ---- sequential per-caller bookkeeping, only for callers with near-duplicates ----
        findings: list[Finding] = []
        flagged: list[FlaggedEvent] = []
        if nd.any():
            ts_s = ts[order]
            margin_s = batch.margin[rows[order]]
            gi = np.repeat(np.arange(len(lay.group_starts)), lay.group_sizes)
            groups = np.unique(gi[nd])
            for g in groups.tolist():
                g0 = int(lay.group_starts[g])
                g1 = g0 + int(lay.group_sizes[g])
                self._caller_events(
                    batch, rows, order, g0, g1, int(lay.group_slots[g]), nd[g0:g1], nd_r[g0:g1],
                    None if smin is None else smin[g0:g1], count[g0:g1],
                    ts_s[g0:g1], margin_s[g0:g1], dmin2[g0:g1], exact[g0:g1].sum(axis=1),
                    A["n_q"][lay.group_slots[g]], findings, flagged,
                )
        # ---- state update ----
        ring_write(A["hist"], Ys, lay, A["head"], self.K)
        if Hs is not None:
            ring_write(A["shash"], Hs, lay, A["head"], self.K)
        ring_advance(A["head"], A["len"], lay, self.K)
        if active.any():
            ring_write(A["nd"], ndu, lay, A["nhead"], self.Wn)
            gs_act = lay.group_slots[g_any | (A["nd_sum"][lay.group_slots] > 0)]
        ring_advance(A["nhead"], A["nlen"], lay, self.Wn)
        if active.any():
            A["nd_sum"][gs_act] = A["nd"][gs_act].sum(axis=1)
        A["n_q"][lay.group_slots] += lay.group_sizes
        last = lay.group_starts + lay.group_sizes - 1
        tab.last_ts[lay.group_slots] = ts[order][last]
        return DetectorOutput(findings=tuple(findings), flagged=tuple(flagged))

    def _caller_events(
        self, batch: EventBatch, rows: np.ndarray, order: np.ndarray, g0: int, g1: int, slot: int,
        nd: np.ndarray, nd_r: np.ndarray, smin: np.ndarray | None, count: np.ndarray, ts: np.ndarray,
        margin: np.ndarray, dmin2: np.ndarray, n_exact: np.ndarray, n_q0: int, findings: list[Finding], flagged: list[FlaggedEvent],
    ) -> None:
        A = self.table.arrays
        d = max(batch.X.shape[1], 1)
        low = np.isfinite(margin) & (margin < self.margin_low) if np.isfinite(self.margin_low) \
            else np.zeros(len(margin), dtype=bool)
        for k in np.flatnonzero(nd).tolist():
            t = float(ts[k])
            last = float(A["last_susp"][slot])
            if not np.isfinite(last) or t - last > self.campaign_gap:
                A["first_susp"][slot] = t
                A["camp_nd"][slot] = 0
                A["camp_lowm"][slot] = 0
                A["camp_rad"][slot] = 0
                A["camp_sp"][slot] = 0
                self._evidence[slot] = []
                self._alerts.pop(slot, None)
            A["last_susp"][slot] = t
            A["camp_nd"][slot] += 1
            A["camp_lowm"][slot] += int(low[k])
            m = NONE if smin is None else int(smin[k])
            is_sp = m <= self.sparse_k
            A["camp_rad"][slot] += int(nd_r[k])
            A["camp_sp"][slot] += int(is_sp)
            self.table.protected[slot] = True
            row = int(rows[order[g0 + k]])
            eid = batch.event_ids[row]
            ev = self._evidence.setdefault(slot, [])
            if len(ev) < self.max_evidence:
                ev.append(eid)
            alert = self._alerts.get(slot)
            c = int(count[k])
            n_camp = int(A["camp_nd"][slot])
            if alert is None and c < self.T:
                continue
            if alert is not None and (n_camp - alert["n_at"]) % self.update_every != 0:
                continue
            evidence = list(ev)
            if eid not in evidence:
                evidence = evidence[: self.max_evidence - 1] + [eid]
            share_low = float(A["camp_lowm"][slot]) / n_camp
            cid = batch.client_ids[row]
            n_sent = int(n_q0) + k + 1
            dist = float(np.sqrt(dmin2[k] / d))
            n_rad, n_sp = int(A["camp_rad"][slot]), int(A["camp_sp"][slot])
            summary = (f"caller sent {c} distinct near-duplicate queries in its last {min(self.Wn, n_sent)} "
                       f"(alert at {self.T}); {self._criteria_text(n_camp, n_rad, n_sp, share_low)}; "
                       f"{self._trigger_text(dist, bool(nd_r[k]), m)}; {int(n_exact[k])} exact repeats ignored")
            if alert is not None:
                summary = f"campaign goes on ({n_camp} near-duplicates so far): " + summary
            expl = {
                "summary": summary,
                "statistic": f"distinct near-duplicates among the caller's last {self.Wn} queries",
                "near_duplicates_in_window": c,
                "window": self.Wn,
                "history": self.K,
                "radius": self.radius,
                "nn_distance": dist,
                "criterion": "radius and sparse" if nd_r[k] and is_sp else ("radius" if nd_r[k] else "sparse"),
                "sparse_max_differing": self.sparse_k,
                "sparse_unit": self._unit(),
                "nn_differing": None if m == NONE else m,
                "campaign_radius_near_duplicates": n_rad,
                "campaign_sparse_near_duplicates": n_sp,
                "exact_repeats_in_window_ignored": int(n_exact[k]),
                "caller_queries_so_far": n_sent,
                "campaign_near_duplicates": n_camp,
                "low_margin_share": share_low,
                "margin_low": self.margin_low if np.isfinite(self.margin_low) else None,
                "first_suspicious_ts": float(A["first_susp"][slot]),
                "first_suspicious_at": time_at(float(A["first_susp"][slot])),
                "evidence_cap": self.max_evidence,
                "config_hash": self.config_hash,
            }
            sev = Severity.CRITICAL if share_low >= 0.5 else Severity.WARNING
            if alert is None:
                alert = {"trigger": eid, "raised_at": t, "n_at": n_camp, "score": float(c), "summary": summary}
                self._alerts[slot] = alert
                is_update = False
                flagged.append(FlaggedEvent(
                    eid, self.name, float(c), float(self.T),
                    f"attack_campaign: {c} distinct near-duplicates in last {self.Wn} queries", cid,
                ))
            else:
                is_update = True
                if "score" in alert:  # an update replaces score and summary: the trigger's stay on record
                    expl["at_trigger"] = {"score": alert["score"], "summary": alert["summary"],
                                          "raised_at": time_at(float(alert["raised_at"]))}
            findings.append(Finding(
                kind=Kind.ATTACK_CAMPAIGN, detector=self.name, config_hash=self.config_hash,
                trigger_event_id=alert["trigger"], raised_at=alert["raised_at"], score=float(c),
                threshold=float(self.T), severity=sev, explanation=expl, client_id=cid,
                window_start=float(A["first_susp"][slot]), window_end=t,
                updated_at=t if is_update else None, event_ids=tuple(evidence), is_update=is_update,
            ))

    def _unit(self) -> str:
        return "features" if self._hasher.groups == 1 else "feature groups"

    def _criteria_text(self, n_camp: int, n_rad: int, n_sp: int, share_low: float) -> str:
        low = f"{share_low:.0%} near the decision boundary"
        if self.sparse_k == 0:
            return (f"{low}; near-duplicate = within distance {self.radius:.3f} of an earlier query "
                    f"(radius rule; sparse rule off)")
        return (f"of this campaign's {n_camp}, {n_rad} lie within distance {self.radius:.3f} of an earlier "
                f"query (radius rule), {n_sp} match one in all but <= {self.sparse_k} of "
                f"{self._hasher.width} {self._unit()} (sparse rule), {low}")

    def _trigger_text(self, dist: float, by_radius: bool, m: int) -> str:
        if self.sparse_k == 0:
            return f"nearest earlier query at distance {dist:.3f}"
        by_sparse = m <= self.sparse_k
        rule = "both rules" if by_radius and by_sparse else ("radius rule" if by_radius else "sparse rule")
        unit = self._unit()
        if m == NONE:
            diff = f"no {unit} differ"
        else:
            diff = f"1 {unit[:-1]} differs" if m == 1 else f"{m} {unit} differ"
        return f"this query: {rule}, distance {dist:.3f}, {diff}"

    # ---------------------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "buffer": None if self.ready else self._buf.state(),
            "center": self.center, "scale": self.scale,
            "radius": self.radius, "margin_low": self.margin_low,
            "sparse_k": self.sparse_k, "sparse_q01": self.sparse_q01,
            "table": self.table.state(),
            "evidence": {str(k): list(v) for k, v in self._evidence.items()},
            "alerts": {str(k): dict(v) for k, v in self._alerts.items()},
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.ready = bool(state["ready"])
        if not self.ready:
            self._buf.load(state["buffer"])
        else:
            self._buf.clear()
        self.center = np.asarray(state["center"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)
        self.radius = float(state["radius"])
        self.margin_low = float(state["margin_low"])
        self.sparse_k = int(state["sparse_k"])
        self.sparse_q01 = float(state["sparse_q01"])
        self.table.load(state["table"])
        self._evidence = {int(k): list(v) for k, v in state["evidence"].items()}
        self._alerts = {int(k): dict(v) for k, v in state["alerts"].items()}
