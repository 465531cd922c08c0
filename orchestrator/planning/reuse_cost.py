"""What an adaptive point costs under run reuse: its marginal FLOPs, given the stems planned so far.

With ``train.schedule: wsd`` and reuse, the points of one shape, recipe and seed share a stem
(orchestrator.running.reuse): a point of D tokens is a branch off the stem at its cooldown start
b = D - f D (workers.schedule.cooldown_start) and trains only its cooldown. What a new point
adds to the sweep's compute then depends on how far its stem is already planned, its reach r
(the highest branch point of its points so far, pending ones included):

- b >= r: the stem's extension from r to b, and the cooldown: 6 N (D - r);
- b < r: the stem keeps only its latest checkpoint once the branches below it have finished
  (intermediate ones are deleted), so it is trained again from step 0 up to b: 6 N D;
- a new stem (r = 0): the whole run, 6 N D.

Points of one ask go to the executor together, and a stem goes up its branch points in order
(ReuseExecutor starts a stem's segments at its next wait): within an ask, only the reach planned
before it can be below a point, and the ask's own points pay the extension to the highest of them
once. So a point is priced 6 N ((D - b) + max(0, b - B)), B the reach with this ask's points,
unless b < r, the reach before the ask (then 6 N D).

For points to share stems at all they need the same N: a candidate N within SNAP decades (half
a step of 10^(1/8) = 1.33) of a stem's N is moved onto it, and D = C / 6N; any other N stays as
proposed. Snapping every N to a fixed ladder of that ratio instead shared as much compute (about
65 % of the points' 6ND spent either way) but left the design fewer sizes, and in one comparison
(T0 at 7 % of the grid's FLOPs, 100 sweeps each, bench/bench_reuse.py's sweeps) its p90 errors
were worse: L* at 1e21 0.029 against 0.026, |ln N_opt| 0.165 against 0.150 (p90s of 100 sweeps
move by about 10 % with the planner's seed: a hint, not a verdict). An N moved by up to 15 %
costs the design little: the loss is flat in N near the optimum (1.25x off wastes 1.8 % of
compute, shared/BENCHMARK.md).

A candidate's stem is found by (N, compute level): the replicate seed it would get there
(AdaptivePlanner._register takes the lowest unused one) says which stem of its N it joins.
Trials, once made, are priced exactly from their own stem id, tokens and branch point.
"""

from __future__ import annotations

import math

import numpy as np

from workers.config import TrainConfig, TrialConfig
from workers.schedule import cooldown_start
from workers.flops import train_flops

__all__ = ["SNAP", "StemLedger"]

SNAP = 1 / 16  # decades: a candidate N this close to a stem's is moved onto it


class StemLedger:
    """How far each stem is planned, and the marginal FLOPs of a candidate or a trial (module docstring)."""

    def __init__(self, train: TrainConfig):
        self.train = train  # its cooldown: where a point of D leaves its stem (workers.schedule)
        self.reach: dict[str, float] = {}  # stem id -> highest branch point (tokens) planned before this ask
        self.batch: dict[str, float] = {}  # stem id -> highest branch point with this ask's points
        self.stem_of: dict[tuple[int, int], str] = {}  # (N, seed) -> stem id
        self.next_seed: dict[tuple[int, int], int] = {}  # (N, compute level) -> lowest unused seed
        self.sizes: set[int] = set()  # N of every stem
        self.planned = 0.0  # FLOPs of picks not yet registered (AdaptivePlanner._propose)
        self._logs: np.ndarray | None = None  # sorted log10 of ``sizes``

    def snap(self, log10_n: np.ndarray) -> np.ndarray:
        """log10 N, moved onto the nearest stem's N where that is within SNAP decades."""
        x = np.asarray(log10_n, float)
        if not self.sizes:
            return x
        if self._logs is None:
            self._logs = np.log10(np.array(sorted(self.sizes), float))
        s = self._logs
        i = np.clip(np.searchsorted(s, x), 1, max(1, len(s) - 1)) if len(s) > 1 else np.zeros(x.shape, int)
        lo, hi = s[i - 1 if len(s) > 1 else i], s[i]
        near = np.where(np.abs(x - lo) <= np.abs(hi - x), lo, hi)
        return np.where(np.abs(near - x) <= SNAP, near, x)

    def _reaches(self, stem_id: str | None) -> tuple[float, float]:
        r = self.reach.get(stem_id, 0.0)
        return r, max(r, self.batch.get(stem_id, 0.0))

    @staticmethod
    def _tokens(d: float, b: float, r: float, top: float) -> float:
        """Tokens a point of D branching at b trains, its stem planned to r before this ask and to top with it."""
        return d if b < r else d - b + max(0.0, b - top)

    def _branch(self, d: float) -> float:
        return float(cooldown_start(round(d), self.train))  # in tokens: a candidate has no batch yet

    def _locate(self, ln: float, lc: float) -> tuple[int, int, int, str | None]:
        """(N, compute level, seed, stem id or None) of a candidate."""
        n, level = round(10**ln), round(4 * lc)
        seed = self.next_seed.get((n, level), 0)
        return n, level, seed, self.stem_of.get((n, seed))

    def price(self, ln: np.ndarray, ld: np.ndarray, lc: np.ndarray) -> np.ndarray:
        """Marginal FLOPs of candidates at (log10 N, log10 D, snapped log10 C)."""
        out = 10.0 ** np.asarray(lc, float)  # a new stem: the whole run
        for i, (x, y, c) in enumerate(zip(ln, ld, lc)):
            n, _, _, stem = self._locate(x, c)
            if stem is not None:
                d = 10.0**y
                out[i] = train_flops(n, self._tokens(d, self._branch(d), *self._reaches(stem)))
        return out

    def cost(self, trial: TrialConfig) -> float:
        """Marginal FLOPs of a trial made for a point, exactly: its own stem, tokens and branch point."""
        b = trial.branch_tokens
        if not trial.stem_id or b <= 0:  # no branch: the whole run from step 0
            return train_flops(trial.n_params, trial.tokens)
        return train_flops(trial.n_params, self._tokens(trial.tokens, b, *self._reaches(trial.stem_id)))

    def add(self, n: int, seed: int, budget: float, stem_id: str, branch: float, committed: bool = False) -> None:
        """Record a registered trial: N, seed, compute level, stem and branch point (tokens);
        ``committed``: one of an earlier run, read back from the journal."""
        level = round(4 * math.log10(budget)) if budget > 0 else 0
        self.next_seed[(n, level)] = max(self.next_seed.get((n, level), 0), seed + 1)
        if stem_id:
            self._stem(n, seed, stem_id, branch, self.reach if committed else self.batch)

    def plan(self, ln: float, ld: float, lc: float) -> float:
        """Record a pick of ``_propose`` before it is made a trial (undone by ``restore``); its price."""
        price = float(self.price(np.array([ln]), np.array([ld]), np.array([lc]))[0])
        n, level, seed, stem = self._locate(ln, lc)
        self.next_seed[(n, level)] = seed + 1
        self._stem(n, seed, stem or f"planned:{n}:{seed}", self._branch(10.0**ld), self.batch)
        self.planned += price
        return price

    def _stem(self, n: int, seed: int, stem_id: str, branch: float, into: dict[str, float]) -> None:
        self.stem_of[(n, seed)] = stem_id
        if n not in self.sizes:
            self.sizes.add(n)
            self._logs = None
        into[stem_id] = max(into.get(stem_id, 0.0), float(branch))

    def save(self) -> tuple:
        return dict(self.batch), dict(self.stem_of), dict(self.next_seed), set(self.sizes), self.planned

    def restore(self, saved: tuple) -> None:
        self.batch, self.stem_of, self.next_seed, self.sizes, self.planned = saved
        self._logs = None

    def commit(self) -> None:
        """The ask's points are submitted: their branch points become the stems' reach."""
        for stem, b in self.batch.items():
            self.reach[stem] = max(self.reach.get(stem, 0.0), b)
        self.batch.clear()
