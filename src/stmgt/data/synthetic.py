"""The embedded synthetic city: the library's default offline dataset.

:func:`synthetic_city` simulates speed sensors on a road graph with the structure a forecaster
should be able to learn, so that benchmarks on it mean something:

* **Road graph** (:func:`synthetic_graph`): sensors on a jittered grid, joined to their grid
  neighbours by a connected, nearly planar network of directed links (most roads two-way, some
  one-way). Highways and arterials run along grid lines; each node has a road class with its own
  free-flow speed, a relative capacity, and some nodes are bottlenecks (lane drops, merges).
* **Demand**: weekday morning and evening rush hours (inbound roads heavier in the morning,
  outbound in the evening, Friday evening earlier), lighter weekends, quiet nights; random
  day-to-day and within-day variations per region and per node.
* **Congestion propagation**: a congestion state ``c[t, n]`` in ``[0, 1]`` relaxes towards the
  larger of the local congestion (demand over capacity, incidents) and the *spill-back* from the
  downstream neighbours ``d`` steps earlier (a sparse product over ``edge_index``). A jam at node
  ``j`` therefore slows every node ``i`` with a link ``i -> j`` a few steps later, and travels
  upstream hop by hop, fading as it goes.
* **Weather** (the covariates): a seasonal and diurnal temperature cycle, a smooth random wind,
  and rain events with random (Poisson) onsets lasting hours. Wet roads lower free-flow speeds
  (more with heavier rain and on busier roads, more again when it freezes) and cut capacity, so
  rain also brings congestion.
* **Incidents**: random, localised, 15-90 minute capacity losses (more likely in rush hours and
  in rain) that spread upstream like any jam.
* **Sensors**: white and slowly varying measurement noise; isolated missing readings and bursts
  of a sensor down for one to six hours.

Everything is vectorised over nodes; the only loop over time steps is one cheap sparse update per
step. The default city (62 nodes, 144 links, 28 days at 5 minutes: 8064 steps) takes well under a
second, and the graph generator uses a grid hash (no distance matrix), so it scales linearly in the
number of nodes. The same ``seed`` always gives the same arrays.

See ``docs/synthetic_city.md`` for the processes, their parameters and measured statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stmgt.data.panel import Panel
from stmgt.errors import ConfigError

ROAD_CLASSES = ("highway", "arterial", "local")
"""Names of the values of :attr:`SyntheticGraph.road_class`."""

COVARIATE_NAMES = ["temperature", "wind_speed", "precipitation"]
"""Covariates of :func:`synthetic_city`: degC, km/h, mm/h."""

DEFAULT_NUM_NODES = 62
DEFAULT_EDGES_PER_NODE = 144 / 62

# ---- graph constants
_SPACING_KM = 1.2  # distance between neighbouring grid points
_JITTER = 0.28  # positional jitter, in grid spacings
_ORIGIN_LATLON = (48.10, 11.45)  # south-west corner of the (fictional) city
_FREE_FLOW_KMH = {0: (100.0, 8.0), 1: (60.0, 5.0), 2: (40.0, 4.0)}  # class -> (mean, sd)
_CLASS_PREFERENCE = np.array([0.2, 0.5, 1.0])  # cheaper links along highway/arterial/local lines
_TURN_WEIGHT = np.array([3.0, 2.0, 1.0])  # share of traffic turning into a highway/arterial/local road
_ONEWAY_FRACTION = 0.2
_BOTTLENECK_FRACTION = 0.12
_REGION_CELLS = 3  # regional demand varies smoothly over about 3 grid cells (3.6 km)

# ---- dynamics constants
_SPILL_DELAY_MIN = 15.0  # a downstream jam reaches its upstream neighbours this much later
_RELAX_MIN = 15.0  # time constant of the congestion state
_SPILL_STRENGTH = 0.95  # how much of a full downstream jam spills into an upstream road
_SPILL_THRESHOLD = 0.10  # downstream congestion below this stays local (the queue fits the road)
_SPILL_POWER = 3.0  # soft maximum over downstream neighbours (power mean weighted by turn shares)
_CONGESTION_ONSET = 0.70  # demand / capacity at which congestion starts
_CONGESTION_FULL = 1.20  # ... and at which the road is fully jammed
_JAM_SPEED_DROP = 0.82  # speed = free flow * (1 - 0.82 c^1.2) at congestion c
_RAIN_EVENTS_PER_DAY = 1.0
_RAIN_MEDIAN_HOURS = 2.5
_RAIN_MEDIAN_PEAK_MMH = 1.8
_WET_DRYING_MIN = 45.0
_INCIDENTS_PER_NODE_DAY = 0.08
_BURST_MIN_MINUTES, _BURST_MAX_MINUTES = 60.0, 360.0
_SLOW_NOISE = 0.025  # relative sensor/driver noise correlated over ~30 minutes
_WHITE_NOISE_KMH, _WHITE_NOISE_REL = 0.8, 0.015  # white noise sd = 0.8 km/h + 1.5% of the speed


@dataclass
class SyntheticGraph:
    """The road graph of the synthetic city (``N`` nodes = road sensors, ``E`` directed links).

    Attributes:
        edge_index: ``[2, E]`` int64 directed links ``source -> target``; traffic flows from source
            to target and congestion spreads from target back to source. No self-loops, no
            duplicates, sorted by (source, target).
        coords: ``[N, 2]`` float64 latitude/longitude in degrees.
        xy_km: ``[N, 2]`` float64 planar positions in km (east, north).
        road_class: ``[N]`` int64 index into :data:`ROAD_CLASSES` (0 highway, 1 arterial, 2 local).
        free_flow: ``[N]`` float64 free-flow speed in km/h.
        capacity: ``[N]`` float64 relative capacity (about 1; bottlenecks 0.72-0.85).
        bottleneck: ``[N]`` bool, True at lane drops/merges that jam first.
        edge_length_km: ``[E]`` float64 link lengths.
        travel_time_min: ``[E]`` float64 free-flow travel times of the links.
        edge_weight: ``[E]`` float32 inverse travel time, scaled so the quickest link has 1.
        turn_share: ``[E]`` float64 share of the source's traffic that turns into the target
            (sums to 1 over each node's outgoing links); weights of the spill-back product.
        node_ids: ``N`` names ``"road-000"``, ``"road-001"``, ...
    """

    edge_index: np.ndarray
    coords: np.ndarray
    xy_km: np.ndarray
    road_class: np.ndarray
    free_flow: np.ndarray
    capacity: np.ndarray
    bottleneck: np.ndarray
    edge_length_km: np.ndarray
    travel_time_min: np.ndarray
    edge_weight: np.ndarray
    turn_share: np.ndarray
    node_ids: list[str]

    @property
    def num_nodes(self) -> int:
        return int(self.road_class.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


# ============================================================================ helpers
def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(f"synthetic city: {name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _check_float(name: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic city: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        bound = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"synthetic city: {name} must lie in {bound}, got {value!r}")
    return v


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed])


def _find(parent: np.ndarray, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def _smooth_noise(rng: np.random.Generator, steps: int, width: int, cols: int | None = None) -> np.ndarray:
    """Unit-variance noise correlated over about ``width`` steps (two box filters); ``[steps(, cols)]``."""
    width = max(1, int(width))
    shape = (steps + 2 * width,) if cols is None else (steps + 2 * width, cols)
    z = rng.standard_normal(shape)
    for _ in range(2):
        c = np.cumsum(z, axis=0)
        z = (c[width:] - c[:-width]) / math.sqrt(width)
    z = z[:steps]
    return (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ============================================================================ graph
def synthetic_graph(
    num_nodes: int = DEFAULT_NUM_NODES, edges_per_node: float = DEFAULT_EDGES_PER_NODE, seed: int = 0
) -> SyntheticGraph:
    """A city-like directed road graph: jittered grid, nearly planar, connected.

    Nodes sit on a jittered grid (``_SPACING_KM`` = 1.2 km apart). Candidate links join grid
    neighbours (horizontal, vertical and one diagonal per grid cell), found with a grid hash, so
    time and memory are linear in ``num_nodes``. A randomised minimum spanning tree over the
    candidates (cheaper along highway and arterial lines) makes the graph connected; the next
    cheapest candidates are added until the link count is reached. About 20% of the roads are
    one-way (chosen off the spanning tree where possible, so the graph stays strongly connected);
    the rest carry both directions.

    Every 8th grid line (offset 4) is a highway and every 4th (offset 2) an arterial; a node takes
    the highest class of its row and column (0 highway ~100 km/h, 1 arterial ~60 km/h, 2 local
    ~40 km/h free flow). About 12% of the nodes are bottlenecks with reduced capacity.

    Args:
        num_nodes: number of nodes ``N`` (>= 2); default 62.
        edges_per_node: directed links per node, in ``[1, 5]``; ``E = round(edges_per_node * N)``
            (capped at twice the candidate count, which only binds for grids of fewer than ~10
            nodes). Default ``144 / 62`` (144 links for 62 nodes).
        seed: non-negative integer; the same seed gives the same graph.

    Returns:
        A :class:`SyntheticGraph`.
    """
    n = _check_int("num_nodes", num_nodes, 2)
    epn = _check_float("edges_per_node", edges_per_node, 1.0, 5.0)
    seed = _check_int("seed", seed, 0)
    rng = _rng(seed, 0)  # the draws below happen in a fixed order: the same seed gives the same graph

    rows, cols, r, c, xy_km = _grid_positions(n, rng)
    row_cls, col_cls = _line_class(r, rows), _line_class(c, cols)
    road_class = np.minimum(row_cls, col_cls).astype(np.int64)
    cand, pref = _candidate_links(r, c, rows, cols, row_cls, col_cls, rng)
    length = np.linalg.norm(xy_km[cand[0]] - xy_km[cand[1]], axis=1)
    n_roads, n_oneway = _road_counts(n, cand.shape[1], epn)
    roads, in_tree = _choose_roads(cand, length * pref, n, n_roads, rng)
    edge_index = _direct_roads(cand, roads, in_tree, road_class, n_oneway, rng)
    free_flow, bottleneck, capacity = _node_attributes(road_class, rng)
    edge_length, travel_time, edge_weight, turn_share = _edge_attributes(edge_index, xy_km, free_flow, road_class)
    width = max(3, len(str(n - 1)))
    return SyntheticGraph(
        edge_index=edge_index,
        coords=_latlon(xy_km),
        xy_km=xy_km,
        road_class=road_class,
        free_flow=free_flow,
        capacity=capacity,
        bottleneck=bottleneck,
        edge_length_km=edge_length,
        travel_time_min=travel_time,
        edge_weight=edge_weight,
        turn_share=turn_share,
        node_ids=[f"road-{i:0{width}d}" for i in range(n)],
    )


def _grid_positions(n: int, rng: np.random.Generator) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, row [N], col [N], xy_km [N, 2])``: node ``i`` at grid cell ``divmod(i, cols)``, jittered."""
    rows = max(1, int(round(math.sqrt(n))))
    cols = -(-n // rows)
    r, c = np.divmod(np.arange(n), cols)
    xy = np.stack([c, r], axis=1).astype(np.float64) + rng.uniform(-_JITTER, _JITTER, size=(n, 2))
    return rows, cols, r, c, xy * _SPACING_KM


def _line_class(k: np.ndarray, size: int) -> np.ndarray:
    """Road class of grid lines ``k`` out of ``size``: every 8th (offset 4) highway, every 4th arterial."""
    hw = (k % 8 == 4) if size > 4 else (k == size // 2)
    art = (k % 4 == 2) & ~hw
    return np.where(hw, 0, np.where(art, 1, 2))


def _candidate_links(
    r: np.ndarray, c: np.ndarray, rows: int, cols: int, row_cls: np.ndarray, col_cls: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs [2, K], cost factor [K])``: links between grid neighbours (grid hash: cell -> node);
    horizontal, vertical and one random diagonal per cell, cheaper along highway/arterial lines."""
    n = r.shape[0]
    node = np.arange(n)
    cell = np.full(rows * cols, -1, dtype=np.int64)
    cell[:n] = node
    diag = rng.random(n) < 0.5  # which diagonal each grid cell gets
    pairs, prefs = [], []
    for dr, dc, kind in ((0, 1, "h"), (1, 0, "v"), (1, 1, "d"), (1, -1, "a")):
        r2, c2 = r + dr, c + dc
        ok = (r2 < rows) & (c2 >= 0) & (c2 < cols)
        if kind == "d":
            ok &= diag
        elif kind == "a":  # the anti-diagonal of the cell to the left-down, i.e. cell (r, c-1)
            ok &= np.roll(~diag, 1) & (c > 0)
        other = np.where(ok, cell[np.clip(r2, 0, rows - 1) * cols + np.clip(c2, 0, cols - 1)], -1)
        ok &= other >= 0
        a, b = node[ok], other[ok]
        if kind == "h":
            pref = _CLASS_PREFERENCE[row_cls[a]]
        elif kind == "v":
            pref = _CLASS_PREFERENCE[col_cls[a]]
        else:
            pref = np.full(a.shape, 1.3)
        pairs.append(np.stack([a, b]))
        prefs.append(pref)
    return np.concatenate(pairs, axis=1), np.concatenate(prefs)


def _road_counts(n: int, n_cand: int, epn: float) -> tuple[int, int]:
    """``(roads, one-way roads)`` giving about ``epn * n`` directed links out of ``n_cand`` candidates."""
    target_e = min(int(round(epn * n)), 2 * n_cand)  # tiny grids cannot hold many links
    n_roads = min(max(math.ceil(target_e / (2 - _ONEWAY_FRACTION)), n - 1), n_cand)
    n_oneway = max(0, 2 * n_roads - target_e)  # <= n_roads because target_e >= n - 1
    return n_roads, n_oneway


def _choose_roads(
    cand: np.ndarray, cost: np.ndarray, n: int, n_roads: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(chosen candidate indices, in-tree flags [K])``: a randomised Kruskal spanning tree over the
    candidates, then the next cheapest (randomised) candidates up to ``n_roads``."""
    n_cand = cand.shape[1]
    key = cost * rng.uniform(0.85, 1.15, size=n_cand)
    order = np.argsort(key, kind="stable")
    parent = np.arange(n)
    in_tree = np.zeros(n_cand, dtype=bool)
    joined = 0
    ca, cb = cand[0].tolist(), cand[1].tolist()
    for k in order.tolist():
        ra, rb = _find(parent, ca[k]), _find(parent, cb[k])
        if ra != rb:
            parent[ra] = rb
            in_tree[k] = True
            joined += 1
            if joined == n - 1:
                break
    extra_key = np.where(in_tree, np.inf, cost * rng.uniform(0.5, 2.0, size=n_cand))
    n_extra = n_roads - int(in_tree.sum())
    chosen = in_tree.copy()
    chosen[np.argsort(extra_key, kind="stable")[:n_extra]] = True
    return np.flatnonzero(chosen), in_tree


def _direct_roads(
    cand: np.ndarray, roads: np.ndarray, in_tree: np.ndarray, road_class: np.ndarray, n_oneway: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``edge_index [2, E]`` int64 sorted by (source, target): ``n_oneway`` roads one-way (off the tree
    first, which keeps strong connectivity; highways last), the others both ways."""
    is_hw = (road_class[cand[0, roads]] == 0) & (road_class[cand[1, roads]] == 0)
    prio = np.where(~in_tree[roads], 0, 1) + np.where(is_hw, 2, 0) + rng.random(roads.size)
    oneway = np.zeros(roads.size, dtype=bool)
    oneway[np.argsort(prio, kind="stable")[:n_oneway]] = True
    flip = rng.random(roads.size) < 0.5
    a, b = cand[0, roads], cand[1, roads]
    src = np.concatenate([np.where(oneway & flip, b, a), b[~oneway]])
    dst = np.concatenate([np.where(oneway & flip, a, b), a[~oneway]])
    o = np.lexsort((dst, src))
    return np.stack([src[o], dst[o]]).astype(np.int64)


def _node_attributes(road_class: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(free-flow km/h, bottleneck, relative capacity)``, each ``[N]``, drawn per road class."""
    n = road_class.shape[0]
    mean_sd = np.array([_FREE_FLOW_KMH[k] for k in range(3)])
    free_flow = np.clip(
        mean_sd[road_class, 0] + mean_sd[road_class, 1] * rng.standard_normal(n),
        0.7 * mean_sd[road_class, 0],
        1.3 * mean_sd[road_class, 0],
    )
    bottleneck = rng.random(n) < np.where(road_class == 2, 0.5, 1.5) * _BOTTLENECK_FRACTION
    capacity = np.where(bottleneck, rng.uniform(0.72, 0.85, n), rng.uniform(0.95, 1.12, n))
    return free_flow, bottleneck, capacity


def _edge_attributes(
    edge_index: np.ndarray, xy_km: np.ndarray, free_flow: np.ndarray, road_class: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(length km, free-flow minutes, float32 weight, turn share)``, each ``[E]`` (see :class:`SyntheticGraph`)."""
    s, t = edge_index
    edge_length = np.linalg.norm(xy_km[s] - xy_km[t], axis=1)
    travel_time = edge_length / (0.5 * (free_flow[s] + free_flow[t])) * 60.0
    edge_weight = (travel_time.min() / travel_time).astype(np.float32) if s.size else np.zeros(0, np.float32)
    turn = _TURN_WEIGHT[road_class[t]]
    turn_share = turn / np.bincount(s, weights=turn, minlength=road_class.shape[0])[s]
    return edge_length, travel_time, edge_weight, turn_share


def _latlon(xy_km: np.ndarray) -> np.ndarray:
    """``[N, 2]`` latitude/longitude in degrees of planar km positions east/north of the city's origin."""
    lat0, lon0 = _ORIGIN_LATLON
    return np.stack(
        [lat0 + xy_km[:, 1] / 111.2, lon0 + xy_km[:, 0] / (111.2 * math.cos(math.radians(lat0)))], axis=1
    )


# ============================================================================ weather
def _weather(rng: np.random.Generator, ts: np.ndarray, hours: np.ndarray, step_min: float) -> dict:
    """Temperature (degC), wind (km/h), precipitation (mm/h) and road wetness ``[0, 1]``, all ``[T]``."""
    T = ts.shape[0]
    per_hour = 60.0 / step_min
    t_days = (ts - ts[0]) / np.timedelta64(1, "D")
    total_days = float(t_days[-1]) + step_min / 1440.0

    # rain events: Poisson onsets, log-normal durations and peak intensities, bumpy profile
    n_ev = rng.poisson(_RAIN_EVENTS_PER_DAY * (total_days + 0.25))
    onset = rng.uniform(-0.25, total_days, n_ev)
    dur = np.clip(rng.lognormal(math.log(_RAIN_MEDIAN_HOURS), 0.55, n_ev), 0.75, 12.0) / 24.0
    peak = np.clip(rng.lognormal(math.log(_RAIN_MEDIAN_PEAK_MMH), 0.7, n_ev), 0.3, 30.0)
    bumps = np.clip(1.0 + 0.45 * _smooth_noise(rng, T, per_hour / 2), 0.15, None)
    precip = np.zeros(T)
    for k in range(n_ev):
        lo = np.searchsorted(t_days, onset[k])
        hi = np.searchsorted(t_days, onset[k] + dur[k])
        if hi > lo:
            u = (t_days[lo:hi] - onset[k]) / dur[k]
            precip[lo:hi] += peak[k] * np.sin(np.pi * u) ** 0.6
    precip *= bumps
    precip[precip < 0.05] = 0.0
    intensity = 1.0 - np.exp(-precip / 4.0)  # 0 dry .. ~0.5 at 3 mm/h .. 1 downpour

    # road wetness: wet while it rains (at least 0.5), drying over ~45 minutes
    decay = math.exp(-step_min / _WET_DRYING_MIN)
    wet = np.empty(T)
    w = 0.0
    floor = np.where(precip > 0.1, 0.5 + 0.5 * intensity, 0.0).tolist()
    for t in range(T):
        w = max(floor[t], w * decay)
        wet[t] = w

    # temperature: season (by day of year) + daily anomaly (AR(1)) + diurnal cycle, cooled by rain
    day_idx = np.floor(t_days).astype(np.int64)
    n_days = int(day_idx[-1]) + 2
    anomaly = np.zeros(n_days)
    for d in range(1, n_days):
        anomaly[d] = 0.7 * anomaly[d - 1] + 2.2 * rng.standard_normal()
    anomaly = np.interp(t_days, np.arange(n_days) + 0.5, anomaly)
    year_start = ts[0].astype("datetime64[Y]")
    doy = (ts - year_start) / np.timedelta64(1, "D")
    season = 10.5 - 9.0 * np.cos(2 * np.pi * (doy - 20.0) / 365.25)
    amp = np.interp(t_days, np.arange(n_days) + 0.5, rng.uniform(2.5, 6.0, n_days))
    diurnal = amp * np.cos(2 * np.pi * (hours - 15.0) / 24.0)
    temperature = season + anomaly + diurnal * (1 - 0.6 * wet) - 2.0 * wet
    temperature = temperature + 0.3 * _smooth_noise(rng, T, per_hour)

    # wind: log-normal smooth process, stronger in the afternoon and in rain
    z = _smooth_noise(rng, T, 3 * per_hour)
    wind = 11.0 * np.exp(0.45 * z) * (1 + 0.15 * np.sin(2 * np.pi * (hours - 9.0) / 24.0)) + 12.0 * intensity
    wind = np.clip(wind + 1.5 * _smooth_noise(rng, T, per_hour / 4), 0.0, None)
    return {"temperature": temperature, "wind": wind, "precip": precip, "intensity": intensity, "wet": wet}


# ============================================================================ demand
def _regional(g: SyntheticGraph, values: np.ndarray) -> np.ndarray:
    """Spread ``values [..., K]`` given on a coarse grid (every ``_REGION_CELLS`` grid cells) to the
    nodes by bilinear interpolation: ``[..., N]``, spatially smooth, O(N) (4 weights per node)."""
    rows, cols = _region_grid(g)
    x, y = g.xy_km[:, 0] / (_SPACING_KM * _REGION_CELLS), g.xy_km[:, 1] / (_SPACING_KM * _REGION_CELLS)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, cols - 2)
    y0 = np.clip(np.floor(y).astype(np.int64), 0, rows - 2)
    fx, fy = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
    out = 0.0
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        w = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        out = out + values[..., (y0 + dy) * cols + (x0 + dx)] * w
    # bilinear weights shrink the variance between grid points; rescale to unit variance on average
    norm = np.sqrt(((1 - fx) ** 2 + fx**2) * ((1 - fy) ** 2 + fy**2))
    return out / norm


def _region_grid(g: SyntheticGraph) -> tuple[int, int]:
    """Rows and columns of the coarse grid of regional factors (covers every node)."""
    ext = g.xy_km.max(axis=0) / (_SPACING_KM * _REGION_CELLS)
    return int(np.ceil(max(ext[1], 0))) + 2, int(np.ceil(max(ext[0], 0))) + 2


def _demand(
    rng: np.random.Generator, g: SyntheticGraph, hours: np.ndarray, dow: np.ndarray, day_idx, per_hour: float
) -> np.ndarray:
    """Relative demand ``[T, N]``: about 0.06 at night, 0.45 midday, 1 at a weekday rush-hour peak.

    Day-to-day and within-day variations are partly regional (spatially smooth), so that
    neighbouring roads fill up together and the state of a region tells what comes next.
    """
    n = g.num_nodes
    T = hours.shape[0]
    center = g.xy_km.mean(axis=0)
    radius = np.linalg.norm(g.xy_km - center, axis=1)
    scale = max(radius.max(), 1e-9)
    # inbound-ness: do this node's links lead towards the centre? (+1 inbound, -1 outbound)
    s, t = g.edge_index
    toward = (radius[s] - radius[t]) / np.maximum(g.edge_length_km, 1e-9)
    cnt = np.bincount(s, minlength=n)
    inbound = np.bincount(s, weights=toward, minlength=n) / np.maximum(cnt, 1)
    centrality = 0.85 + 0.3 * np.exp(-((radius / (0.6 * scale)) ** 2))
    a_m = np.clip(0.8 + 0.3 * inbound + 0.08 * rng.standard_normal(n), 0.4, 1.3)
    a_e = np.clip(0.8 - 0.3 * inbound + 0.08 * rng.standard_normal(n), 0.4, 1.3)

    rows, cols = _region_grid(g)
    k = rows * cols
    n_days = int(day_idx[-1]) + 1
    # rush-hour timing: node habit + a shift per day for the city and per day and region
    shift = 0.2 * rng.standard_normal((n_days, 1)) + 0.25 * _regional(g, rng.standard_normal((n_days, k)))
    shift_m = (0.2 * rng.standard_normal(n) + shift)[day_idx]
    shift_e = (0.25 * rng.standard_normal(n) + shift)[day_idx]
    # volume: a factor per day (city, region, node) and a slow within-day regional anomaly
    day_factor = np.exp(
        0.05 * rng.standard_normal((n_days, 1))
        + 0.05 * _regional(g, rng.standard_normal((n_days, k)))
        + 0.04 * rng.standard_normal((n_days, n))
    )
    anomaly = 0.07 * _regional(g, _smooth_noise(rng, T, 2 * per_hour, k))
    anomaly = anomaly + 0.03 * _smooth_noise(rng, T, per_hour, n)

    h = hours[:, None]
    weekday = (dow < 5)[:, None]
    friday = (dow == 4)[:, None]
    sunday = (dow == 6)[:, None]
    morning = np.exp(-0.5 * ((h - 8.0 - shift_m) / 0.85) ** 2) * a_m * np.where(friday, 0.9, 1.0)
    ev_mu = np.where(friday, 16.8, 17.5)
    evening = np.exp(-0.5 * ((h - ev_mu - shift_e) / np.where(friday, 1.5, 1.2)) ** 2) * a_e
    wk_day = 0.06 + 0.42 * _sigmoid((hours - 6.3) / 0.5) * _sigmoid((22.0 - hours) / 0.8)
    we_day = 0.06 + 0.30 * _sigmoid((hours - 8.5) / 0.8) * _sigmoid((22.5 - hours) / 0.8)
    we_bump = 0.28 * np.exp(-0.5 * ((hours - 14.0) / 2.5) ** 2)
    weekend = (we_day + we_bump)[:, None] * np.where(sunday, 0.8, 1.0)
    base = np.where(weekday, wk_day[:, None] + 0.62 * (morning + evening), weekend)
    return base * centrality * day_factor[day_idx] * (1.0 + anomaly)


# ============================================================================ city
def _simulate(num_nodes, days, interval_minutes, edges_per_node, seed, missing_rate, start) -> dict:
    """Run every process; returns the arrays of the panel plus the hidden states (for tests and docs)."""
    g = synthetic_graph(num_nodes, edges_per_node, seed)
    days_f = _check_float("days", days, 0.0, 3660.0, lo_open=True)
    step = _check_float("interval_minutes", interval_minutes, 0.0, 60.0, lo_open=True)
    miss = _check_float("missing_rate", missing_rate, 0.0, 0.5)
    T = int(math.floor(days_f * 1440.0 / step + 1e-9))
    if T < 2:
        raise ConfigError(f"synthetic city: {days_f:g} days at {step:g} minutes is {T} step(s); need >= 2")
    try:
        t0 = np.datetime64(start, "ns")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"synthetic city: start {start!r} is not a date/time ({e})") from None
    step_ns = int(round(step * 60e9))
    ts = t0 + np.arange(T, dtype=np.int64) * np.timedelta64(step_ns, "ns")

    rng = _rng(int(seed), 1)
    n = g.num_nodes
    per_hour = 60.0 / step
    midnight = ts.astype("datetime64[D]")
    hours = (ts - midnight) / np.timedelta64(1, "h")
    dow = (midnight.astype(np.int64) + 3) % 7  # 0 = Monday
    day_idx = ((midnight - midnight[0]) / np.timedelta64(1, "D")).astype(np.int64)

    wx = _weather(rng, ts, hours, step)
    wet, intensity = wx["wet"][:, None], wx["intensity"][:, None]
    demand = _demand(rng, g, hours, dow, day_idx, per_hour)

    # ---- local congestion: demand over (rain-reduced) capacity, plus incidents
    pressure = demand / (g.capacity * (1.0 - 0.15 * wet))
    x = np.clip((pressure - _CONGESTION_ONSET) / (_CONGESTION_FULL - _CONGESTION_ONSET), 0.0, 1.0)
    local = x**1.5
    p_inc = _INCIDENTS_PER_NODE_DAY * step / 1440.0 * (0.5 + 1.2 * np.minimum(demand, 1.2))
    p_inc = p_inc * (1.0 + 1.5 * wet)
    t_inc, n_inc = np.nonzero(rng.random((T, n)) < p_inc)
    dur = np.maximum(1, np.round(rng.uniform(15.0, 90.0, t_inc.size) / step)).astype(np.int64)
    sev = rng.uniform(0.55, 1.0, t_inc.size)
    for t1, n1, d1, s1 in zip(t_inc.tolist(), n_inc.tolist(), dur.tolist(), sev.tolist()):
        seg = local[t1 : t1 + d1, n1]
        np.maximum(seg, s1, out=seg)

    # ---- congestion state with delayed upstream spill-back (one sparse product per step)
    src, dst = g.edge_index
    share = g.turn_share
    delay = max(1, int(round(_SPILL_DELAY_MIN / step)))
    relax = math.exp(-step / _RELAX_MIN)
    keep, gain = relax, 1.0 - relax
    inv_p = 1.0 / _SPILL_POWER
    spill_gain = _SPILL_STRENGTH / (1.0 - _SPILL_THRESHOLD)
    cong = np.zeros((T, n))
    cong_p = np.zeros((T + delay, n))  # cong ** p, shifted by `delay` (rows before t=0 are zero)
    prev = np.zeros(n)
    for t in range(T):
        spill = np.bincount(src, weights=share * cong_p[t, dst], minlength=n) ** inv_p - _SPILL_THRESHOLD
        prev = keep * prev + gain * np.maximum(local[t], spill_gain * spill)
        cong[t] = prev
        cong_p[t + delay] = prev**_SPILL_POWER

    # ---- speeds
    drop = wet * (0.07 + 0.10 * intensity + 0.06 * np.minimum(pressure, 1.0))
    freezing = (wx["temperature"] < 0.5)[:, None]
    drop = np.where(freezing, np.minimum(1.6 * drop, 0.4), drop)
    windy = np.clip((wx["wind"] - 35.0) / 30.0, 0.0, 1.0)[:, None] * np.where(g.road_class == 0, 0.06, 0.02)
    ff = g.free_flow * (1.0 - drop) * (1.0 - windy)
    speed = ff * (1.0 - _JAM_SPEED_DROP * cong**1.2) * (1.0 - 0.05 * np.minimum(demand, 1.2))
    speed *= 1.0 + _SLOW_NOISE * _smooth_noise(rng, T, per_hour / 2, n)
    speed += rng.standard_normal((T, n)) * (_WHITE_NOISE_KMH + _WHITE_NOISE_REL * speed)
    speed = np.clip(speed, 3.0, 1.1 * g.free_flow)

    # ---- missing readings: isolated dropouts and bursts (sensor down for 1-6 hours)
    observed = rng.random((T, n)) >= miss / 2
    if miss > 0:
        lo_b, hi_b = _BURST_MIN_MINUTES / step, _BURST_MAX_MINUTES / step
        n_burst = rng.poisson(miss / 2 * T * n / ((lo_b + hi_b) / 2))
        b_node = rng.integers(0, n, n_burst)
        b_start = rng.integers(0, T, n_burst)
        b_len = np.round(rng.uniform(lo_b, hi_b, n_burst)).astype(np.int64)
        for n1, t1, l1 in zip(b_node.tolist(), b_start.tolist(), b_len.tolist()):
            observed[t1 : t1 + l1, n1] = False

    return {
        "graph": g,
        "timestamps": ts,
        "speed": speed,
        "observed": observed,
        "congestion": cong,
        "local": local,
        "demand": demand,
        "incidents": np.stack([t_inc, n_inc, dur]),
        **wx,
    }


def synthetic_city(
    num_nodes: int = DEFAULT_NUM_NODES,
    days: float = 28,
    interval_minutes: float = 5,
    edges_per_node: float = DEFAULT_EDGES_PER_NODE,
    seed: int = 0,
    missing_rate: float = 0.02,
    start: str = "2024-01-01",
) -> Panel:
    """Simulate the synthetic city: speeds on a road graph with weather covariates.

    Args:
        num_nodes: number of road sensors ``N`` (>= 2); default 62.
        days: length of the series in days (> 0); default 28. ``T = floor(days * 1440 / interval)``.
        interval_minutes: minutes between readings (0 < interval <= 60); default 5.
        edges_per_node: directed links per node (see :func:`synthetic_graph`); default 144/62.
        seed: non-negative integer; the same arguments give identical arrays.
        missing_rate: target fraction of missing readings in ``[0, 0.5]``, half as isolated
            dropouts and half as bursts of a sensor down for 1-6 hours; default 0.02.
        start: first timestamp (anything :func:`numpy.datetime64` parses); default
            ``"2024-01-01"`` (a Monday). The season of the temperature follows it.

    Returns:
        A :class:`~stmgt.data.panel.Panel` named ``"synthetic-city"`` (units ``"km/h"``) with
        ``values [T, N, 1]`` speed in km/h (0 where missing), ``mask [T, N, 1]``, timestamps every
        ``interval_minutes``, node ids ``"road-000"``..., the graph's ``edge_index``/``edge_weight``
        and ``coords``, and ``covariates [T, 3]`` named ``temperature`` (degC), ``wind_speed``
        (km/h) and ``precipitation`` (mm/h).
    """
    sim = _simulate(num_nodes, days, interval_minutes, edges_per_node, seed, missing_rate, start)
    g, observed = sim["graph"], sim["observed"]
    values = np.where(observed, sim["speed"], np.nan).astype(np.float32)[:, :, None]
    covariates = np.stack([sim["temperature"], sim["wind"], sim["precip"]], axis=1).astype(np.float32)
    return Panel(
        values=values,
        mask=observed[:, :, None],
        timestamps=sim["timestamps"],
        edge_index=g.edge_index,
        edge_weight=g.edge_weight,
        node_ids=g.node_ids,
        covariates=covariates,
        covariate_names=list(COVARIATE_NAMES),
        coords=g.coords,
        name="synthetic-city",
        units="km/h",
    )
