"""The statistics of an ablation: paired differences over seeds and their Student t interval.

    d_k = m(config, seed k) - m(base, seed k),   k = 1..n
    mean d +- t_{0.975, n-1} * sd(d) / sqrt(n)

A config is ``better`` (``worse``) when the whole interval lies above (below) zero, else ``within noise``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass
class Paired:
    """Mean paired difference and its Student t interval."""

    n: int
    mean: float
    sd: float  # standard deviation of the differences (nan for n < 2)
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "n/a (one seed)" if self.n == 1 else "n/a"
        return "better" if self.low > 0 else "worse" if self.high < 0 else "within noise"


def paired(base: dict[int, float], other: dict[int, float], conf: float = 0.95) -> Paired:
    """Paired differences ``other[k] - base[k]`` over the seeds both have, with a ``conf`` Student t interval."""
    d = [other[k] - base[k] for k in sorted(set(base) & set(other))]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(d)
    if n == 1:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    sd = statistics.stdev(d)
    half = t_quantile(n - 1, 0.5 + conf / 2) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half)


def seeds_to_resolve(sd: float, delta: float, conf: float = 0.95, limit: int = 10_000) -> int | None:
    """The fewest paired seeds n whose interval half-width t_{n-1} * sd / sqrt(n) is below ``delta``."""
    if not sd > 0:
        return None if math.isnan(sd) else 2
    for n in range(2, limit):
        if t_quantile(n - 1, 0.5 + conf / 2) * sd / math.sqrt(n) < delta:
            return n
    return None


def std(values: list[float]) -> float:
    """Sample standard deviation; nan below two values."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def mean(values: list[float]) -> float:
    """Mean; nan for no values."""
    return statistics.fmean(values) if values else math.nan
