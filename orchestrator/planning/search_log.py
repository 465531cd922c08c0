"""The decisions of a tuned sweep that depend on when results arrived, kept so a re-run repeats them.

A per-point search (orchestrator.planning.tuning) is deterministic given its centre and its
results, and a ladder point is one trial at the rule fitted to the tuned points. Both the centre
(a learning planner centres a new search on the rule fitted to the searches finished so far) and
the ladder's rule depend on which searches had finished, and in what order, when the point
started: a live run on Ray and a replay from the store see different orders, and a trial id
hashes its learning rate to the last bit, so a recomputed decision that differs in the sixth
digit trains the point again (issue 26: a finished ladder sweep retrained its 3 ladder points on
a plain re-run; an adaptive search resumed after kill -9 restarted at another centre).

So the decision is made once and recorded, as Marin records each step's resolved config next to
its output: one small JSON blob per design point, ``searches/<point_id>.json``, written through
the result store (atomic, and on object storage too) before the point's first trial is proposed.
A re-run reads the record instead of deciding again. The record also says how to remake the
point (target N and D, budget, seed), so a resumed sweep can rebuild the searches that finished
before it, for the rules that centre new ones and for the run's summary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from workers.store import ResultStore

__all__ = ["PointRecord", "SearchLog"]

log = logging.getLogger(__name__)

FOLDER = "searches"


@dataclass(frozen=True)
class PointRecord:
    """How one design point was run: ``kind`` "search" (``lr``/``batch_tokens`` are the search's
    centre) or "ladder" (they are the one trial's values, ``recipe`` says where they came from)."""

    point_id: str
    kind: str
    n_target: float
    d_target: float
    budget: float
    seed: int
    where: str
    lr: float
    batch_tokens: int
    recipe: str = "tune"


class SearchLog:
    """The records of one results directory (none without a store: nothing is kept)."""

    def __init__(self, store: ResultStore | None):
        self.store = store
        self._records: dict[str, PointRecord] = {}
        if store is None:
            return
        for name in store.list_names(FOLDER):
            if not name.endswith(".json"):
                continue
            try:
                rec = PointRecord(**json.loads(store.read_bytes(f"{FOLDER}/{name}") or b""))
                if f"{rec.point_id}.json" != name or rec.kind not in ("search", "ladder"):
                    raise ValueError("not the record its name says")
            except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
                # A record is a cache of a decision: without it the decision is made again
                # (at worst the point's trials are trained again), so a damaged one is skipped.
                log.warning("skipping damaged search record %s/%s (%s); the point's search is planned again",
                            FOLDER, name, str(e).splitlines()[0] if str(e) else type(e).__name__)
                continue
            self._records[rec.point_id] = rec

    def get(self, point_id: str) -> PointRecord | None:
        return self._records.get(point_id)

    def records(self) -> list[PointRecord]:
        """Every record, in point id order (a canonical order: what is rebuilt from them must
        not depend on the order the files were listed in)."""
        return [self._records[k] for k in sorted(self._records)]

    def record(self, rec: PointRecord) -> None:
        """Keep ``rec`` (once: a point's decision is never changed after its trials started)."""
        if rec.point_id in self._records:
            return
        self._records[rec.point_id] = rec
        if self.store is not None:
            self.store.write_bytes(f"{FOLDER}/{rec.point_id}.json", json.dumps(asdict(rec)).encode())
