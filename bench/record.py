"""How a benchmark records its result: the command, machine and date with the data, one JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

__all__ = ["meta", "write"]


def meta(module: str, t0: float, **extra) -> dict:
    """The command that ran ``module``, the machine, the date and the wall time since ``t0``."""
    return {"command": f"python -m {module} " + " ".join(sys.argv[1:]),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), "wall_s": time.time() - t0, **extra}


def write(out: str, meta: dict, summary: dict, rows: list) -> None:
    """``{"meta", "summary", "runs"}`` to ``out``; the summary also to stdout."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": rows}, f, indent=1)
    print(json.dumps(summary, indent=1))
