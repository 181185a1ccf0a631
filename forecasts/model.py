"""The statistics of the forecasts domain, free of the database (SPEC §15).

Growth forecast of one batch from its expansion counts:

* **Exponential** growth is a straight line on the log scale: ``ln N = a + r t``, fitted by
  ordinary least squares (numpy). Its 90 % prediction interval at the harvest day is the
  Student-t interval of a new observation on the log scale (scipy.stats.t): the
  uncertainty of both parameters *and* the scatter of a count around the line.
* **The scatter of a count** is not left to three residuals (one degree of freedom gives
  intervals a hundred-fold wide and probabilities that say little). The counter's known
  precision enters as a prior: a log-scale standard deviation of :data:`COUNT_SD` (an
  automated AO/PI count of a sample from a closed bag repeats within about 10 %) worth
  :data:`PRIOR_DF` degrees of freedom, pooled with the batch's own residuals (the
  conjugate scaled-inverse-chi-square prior: ``s^2 = (nu0 s0^2 + RSS) / (nu0 + n - p)``
  and a t distribution with ``nu0 + n - p`` degrees of freedom). A batch whose counts
  scatter more widens its own interval as its residuals come in.
* **Logistic** growth (a culture approaching the capacity ``K`` of its vessel) is fitted on
  the log scale with ``scipy.optimize.curve_fit`` once the counts show slowing growth
  (a negative curvature of ``ln N`` over time) and there are at least
  :data:`MIN_POINTS_LOGISTIC` of them. Its interval is simulated: parameters drawn from
  the fit's covariance (multivariate normal), each draw plus a residual drawn from the
  t distribution scaled by the residual standard deviation.
* **Selection**: the logistic model replaces the exponential only when its AICc (Akaike's
  criterion corrected for small samples, Hurvich and Tsai 1989) is lower by at least
  :data:`AICC_MARGIN`. With a handful of counts a curve with one more parameter always
  fits a little better; a difference under 2 is not support for it (Burnham and Anderson
  2002, section 2.6), and the simpler model extrapolates more predictably.

The probability of reaching the target is read from the same predictive distribution as
the interval, so the two never disagree. Fewer than :data:`MIN_POINTS` counts give no
model and say why.

Control charts across batches: the individuals (X) chart and its moving-range (MR) chart,
centre and limits from the released batches only, and Nelson's rules 1-4 per point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

LEVEL = 0.9  # SPEC §15: a 90 % prediction interval
MIN_POINTS = 3  # SPEC §15: from 3 counts on (2 would leave no degrees of freedom)
MIN_POINTS_LOGISTIC = 6  # 3 parameters + sigma: AICc needs n > k + 1 = 5
AICC_MARGIN = 2.0
SIMULATIONS = 4000
COUNT_SD = 0.10
PRIOR_DF = 4
SEED = 15  # a fixed seed: the same counts give the same forecast, page and PDF alike
BAND_POINTS = 13  # from the last count to the harvest day: smooth enough, cheap to draw
MIN_SPAN_DAYS = 1.0  # counts closer together than a day cannot show a daily growth rate
MAX_CELLS = 1e14  # more than any culture vessel holds: a forecast past it is no forecast


@dataclass(frozen=True)
class Prediction:
    median: float
    low: float
    high: float
    level: float = LEVEL


@dataclass(frozen=True)
class BandPoint:
    day: float
    median: float
    low: float
    high: float


@dataclass(frozen=True)
class GrowthForecast:
    """The forecast of one batch (cells, days after batch start)."""

    model: str | None  # "exponential", "logistic"; None: too few counts (see ``reason``)
    reason: str | None
    points: int
    target: float
    harvest_day: float
    doubling_time_h: float | None = None  # at the last count; None: not growing
    predicted: Prediction | None = None
    p_target: float | None = None
    criterion: dict[str, float] = field(default_factory=dict)  # AICc of each model fitted
    parameters: dict[str, float] = field(default_factory=dict)
    band: tuple[BandPoint, ...] = ()
    notes: tuple[str, ...] = ()


def _aicc(rss: float, n: int, k: int) -> float:
    """AICc of a least-squares fit with Gaussian errors; ``k`` counts sigma too."""
    rss = max(rss, 1e-300)
    return n * math.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


Numeric = np.ndarray | float


def _logistic(t: np.ndarray, y0: Numeric, r: Numeric, d: Numeric) -> np.ndarray:
    """ln N of logistic growth: N0 = e^y0 at t = 0, rate r, capacity K = N0 e^d."""
    return y0 + d - np.log1p(np.expm1(d) * np.exp(-r * t))


def fit_growth(days: Sequence[float], cells: Sequence[float], *, target: float,
               harvest_day: float) -> GrowthForecast:
    """The forecast from counts ``cells`` at ``days`` (see the module docstring)."""
    pairs = sorted((float(d), float(c)) for d, c in zip(days, cells, strict=True)
                   if c is not None and d is not None)
    notes: list[str] = []
    positive = [(d, c) for d, c in pairs if c > 0]
    if len(positive) < len(pairs):
        notes.append(f"{len(pairs) - len(positive)} count(s) of 0 cells left out "
                     "(growth is fitted on the log scale)")
    if len(positive) < MIN_POINTS:
        return GrowthForecast(
            model=None, reason=f"too few counts: {len(positive)} of the {MIN_POINTS} a "
                               "forecast needs", notes=tuple(notes), points=len(positive),
            target=target, harvest_day=harvest_day)
    t = np.array([d for d, _ in positive])
    span = float(np.ptp(t))
    if span <= 0:
        return GrowthForecast(model=None, reason="the counts were all taken on one day",
                              notes=tuple(notes), points=len(positive), target=target,
                              harvest_day=harvest_day)
    if span < MIN_SPAN_DAYS:
        return GrowthForecast(
            model=None, reason=f"the counts span {span * 24:.1f} h: a growth rate needs "
                               f"counts at least {MIN_SPAN_DAYS:g} day apart",
            notes=tuple(notes), points=len(positive), target=target, harvest_day=harvest_day)
    try:
        return _fit(t, np.log([c for _, c in positive]), notes, target, harvest_day)
    except OverflowError:  # exp() of an extrapolation past any float
        return _implausible(len(positive), notes, target, harvest_day)


def _implausible(points: int, notes: list[str], target: float,
                 harvest_day: float) -> GrowthForecast:
    return GrowthForecast(
        model=None, reason=f"the counts extrapolate to more than {MAX_CELLS:.0E} cells by "
                           "the harvest day: check the counts and their days",
        notes=tuple(notes), points=points, target=target, harvest_day=harvest_day)


def _fit(t: np.ndarray, y: np.ndarray, notes: list[str], target: float,
         harvest_day: float) -> GrowthForecast:
    """Both models on counts that span at least a day (``fit_growth`` checked them)."""
    n = len(t)
    origin = float(t[0])
    x = t - origin
    grid = np.linspace(float(t[-1]), max(harvest_day, float(t[-1])), BAND_POINTS) - origin
    log_target = math.log(target)
    x_harvest = harvest_day - origin

    # Exponential: OLS on the log scale.
    design = np.column_stack([np.ones(n), x])
    coef, _, _, _ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ coef
    rss = float(residuals @ residuals)
    df = PRIOR_DF + n - 2
    s = math.sqrt((PRIOR_DF * COUNT_SD**2 + rss) / df)
    inverse = np.linalg.inv(design.T @ design)
    criterion = {"exponential": _aicc(rss, n, 3)} if n > 4 else {}

    def exp_predict(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.column_stack([np.ones(len(at)), at])
        se = s * np.sqrt(1 + np.einsum("ij,jk,ik->i", rows, inverse, rows))
        return rows @ coef, se

    chosen = "exponential"
    logistic_fit: tuple[np.ndarray, np.ndarray] | None = None
    if n >= MIN_POINTS_LOGISTIC:
        curvature = np.polyfit(x, y, 2)[0]
        if curvature < 0:  # growth slows: a capacity may be in sight
            logistic_fit = _fit_logistic(x, y, coef)
            if logistic_fit is None:
                notes.append("the logistic model did not converge; exponential kept")
            else:
                params, _ = logistic_fit
                rss_l = float(np.sum((y - _logistic(x, *params)) ** 2))
                criterion["logistic"] = _aicc(rss_l, n, 4)
                if criterion["logistic"] <= criterion["exponential"] - AICC_MARGIN:
                    chosen = "logistic"

    if chosen == "exponential":
        median, se = exp_predict(np.array([x_harvest]))
        quantile = float(stats.t.ppf(0.5 + LEVEL / 2, df))
        centre, spread = float(median[0]), float(se[0])
        predicted = Prediction(median=math.exp(centre), low=math.exp(centre - quantile * spread),
                               high=math.exp(centre + quantile * spread))
        p_target = (float(stats.t.sf((log_target - centre) / spread, df)) if spread > 0
                    else float(centre >= log_target))
        grid_median, grid_se = exp_predict(grid)
        band = tuple(
            BandPoint(day=float(g + origin), median=math.exp(m), low=math.exp(m - quantile * e),
                      high=math.exp(m + quantile * e))
            for g, m, e in zip(grid, grid_median, grid_se, strict=True))
        rate = float(coef[1])
        parameters = {"ln_n0": float(coef[0]) - rate * origin, "rate_per_day": rate,
                      "residual_sd_log": s}
    else:
        assert logistic_fit is not None
        params, cov = logistic_fit
        y_l = _logistic(x, *params)
        rss_l = float(np.sum((y - y_l) ** 2))
        df = PRIOR_DF + n - 3
        s = math.sqrt((PRIOR_DF * COUNT_SD**2 + rss_l) / df)
        if rss_l > 0:  # curve_fit scaled the covariance by the batch's own residuals only
            cov = cov * s**2 / (rss_l / (n - 3))
        draws = _simulate(params, cov, s, df, np.concatenate([[x_harvest], grid]))
        at_harvest = draws[:, 0]
        low, mid, high = np.quantile(at_harvest, [0.5 - LEVEL / 2, 0.5, 0.5 + LEVEL / 2])
        predicted = Prediction(median=math.exp(mid), low=math.exp(low), high=math.exp(high))
        p_target = float(np.mean(at_harvest >= log_target))
        q = np.quantile(draws[:, 1:], [0.5 - LEVEL / 2, 0.5, 0.5 + LEVEL / 2], axis=0)
        band = tuple(BandPoint(day=float(g + origin), median=math.exp(q[1][i]),
                               low=math.exp(q[0][i]), high=math.exp(q[2][i]))
                     for i, g in enumerate(grid))
        y0, r, d = (float(v) for v in params)
        # The rate slows as the culture fills: d ln N / dt = r (1 - N / K).
        current = math.exp(float(y_l[-1]) - (y0 + d))
        rate = r * (1 - current)
        parameters = {"ln_n0": y0, "rate_per_day": r, "capacity": math.exp(y0 + d),
                      "residual_sd_log": s, "origin_day": origin}
    if predicted.median > MAX_CELLS:
        return _implausible(n, notes, target, harvest_day)
    doubling = math.log(2) / rate * 24 if rate > 0 else None
    if doubling is None:
        notes.append("the counts do not grow: no doubling time")
    return GrowthForecast(
        model=chosen, reason=None, doubling_time_h=doubling, predicted=predicted,
        p_target=min(max(p_target, 0.0), 1.0), criterion=criterion, parameters=parameters,
        band=band, notes=tuple(notes), points=n, target=target,
        harvest_day=harvest_day)


def _fit_logistic(x: np.ndarray, y: np.ndarray,
                  linear: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    start = (float(y[0]), max(float(linear[1]) * 1.5, 0.05), float(np.ptp(y)) + 0.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", optimize.OptimizeWarning)
            params, cov = optimize.curve_fit(
                _logistic, x, y, p0=start, bounds=([-np.inf, 1e-6, 1e-3], [np.inf, 10, 30]),
                maxfev=5000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    if not np.all(np.isfinite(cov)):
        return None
    return params, cov


def _simulate(params: np.ndarray, cov: np.ndarray, s: float, df: int,
              at: np.ndarray) -> np.ndarray:
    """ln N at ``at`` for parameter draws from the fit's covariance plus t-distributed
    residual scatter (one row per draw)."""
    rng = np.random.default_rng(SEED)
    theta = rng.multivariate_normal(params, cov, size=SIMULATIONS, method="svd")
    theta[:, 1] = np.clip(theta[:, 1], 1e-6, None)
    theta[:, 2] = np.clip(theta[:, 2], 1e-3, None)
    curves = _logistic(at[None, :], theta[:, :1], theta[:, 1:2], theta[:, 2:3])
    noise = stats.t.rvs(df, size=curves.shape, random_state=rng) * s
    return np.asarray(curves + noise)


# --- control charts ----------------------------------------------------------------------

# The bias constants of the moving range of two consecutive values (subgroup size 2),
# derived rather than copied: for two independent N(0, 1) values, E|X1 - X2| = 2/sqrt(pi)
# (d2) and Var|X1 - X2| = 2 - 4/pi (d3^2); D4 = 1 + 3 d3/d2 is the MR chart's upper limit.
D2 = 2 / math.sqrt(math.pi)
D3 = math.sqrt(2 - 4 / math.pi)
D4 = 1 + 3 * D3 / D2
# Limits resting on fewer released batches are not drawn: the moving-range estimate of
# sigma from 7 moving ranges still errs by about a third (its relative standard error),
# so limits would flag or hide a shift by chance. Montgomery recommends 20-25 batches;
# the chart says how many it rests on.
MIN_BASELINE = 8
RULES = {
    1: "one point beyond 3 sigma of the centre line",
    2: "nine points in a row on one side of the centre line",
    3: "six points in a row steadily increasing or decreasing",
    4: "fourteen points in a row alternating up and down",
}


@dataclass(frozen=True)
class Limits:
    centre: float
    lower: float
    upper: float
    sigma: float
    mr_centre: float
    mr_upper: float
    baseline: int  # released batches the limits rest on


@dataclass(frozen=True)
class ControlResult:
    limits: Limits | None
    reason: str | None  # why there are no limits
    rules: tuple[tuple[int, ...], ...]  # per point, the Nelson rules it breaks
    moving_ranges: tuple[float | None, ...]


def control_limits(baseline: Sequence[float]) -> tuple[Limits | None, str | None]:
    """Individuals-chart limits from the baseline values in time order."""
    values = np.asarray(baseline, dtype=float)
    if len(values) < MIN_BASELINE:
        return None, (f"limits need at least {MIN_BASELINE} released batches with a value; "
                      f"there are {len(values)}")
    mr_bar = float(np.mean(np.abs(np.diff(values))))
    centre = float(np.mean(values))
    sigma = mr_bar / D2
    return Limits(centre=centre, lower=centre - 3 * sigma, upper=centre + 3 * sigma,
                  sigma=sigma, mr_centre=mr_bar, mr_upper=D4 * mr_bar,
                  baseline=len(values)), None


def nelson_rules(values: Sequence[float], centre: float, sigma: float) -> list[tuple[int, ...]]:
    """Per point, the rules 1-4 it breaks: the point that completes a run, and every
    later point while the run lasts."""
    x = np.asarray(values, dtype=float)
    broken: list[list[int]] = [[] for _ in x]
    side = np.sign(x - centre)
    step = np.sign(np.diff(x))
    for i in range(len(x)):
        if sigma > 0 and abs(x[i] - centre) > 3 * sigma:
            broken[i].append(1)
        if i >= 8 and side[i] != 0 and np.all(side[i - 8:i + 1] == side[i]):
            broken[i].append(2)
        # step[j] compares x[j+1] with x[j]: six points are five steps of one sign.
        if i >= 5 and step[i - 1] != 0 and np.all(step[i - 5:i] == step[i - 1]):
            broken[i].append(3)
        if i >= 13:
            window = step[i - 13:i]
            if np.all(window != 0) and np.all(window[1:] * window[:-1] < 0):
                broken[i].append(4)
    return [tuple(b) for b in broken]


def control_chart(values: Sequence[float], baseline: Sequence[bool]) -> ControlResult:
    """The chart of ``values`` (in time order); ``baseline`` marks the released batches
    the limits rest on. Rules are only evaluated against limits."""
    limits, reason = control_limits([v for v, b in zip(values, baseline, strict=True) if b])
    moving: list[float | None] = [None if i == 0 else abs(values[i] - values[i - 1])
                                  for i in range(len(values))]
    if limits is None:
        return ControlResult(None, reason, tuple(() for _ in values), tuple(moving))
    return ControlResult(limits, None, tuple(nelson_rules(values, limits.centre, limits.sigma)),
                         tuple(moving))
