"""μP learning-rate transfer: how far the optimal learning rate moves across an 8x width range.

Trains the worker's GPT (workers.run.run_trial of workers.gpt.train.train, the real loop: AdamW, warmup and cosine, clip)
on the python-stdlib byte corpus at a fixed depth, at several widths with a fixed head size, in
the standard parametrisation (SP) and in μP relative to the smallest width (TrialConfig.
mup_base_width; Yang et al. 2022, "Tensor Programs V"). Every trial sees the same tokens in the
same order (seed 0) and is scored by its final held-out loss. Each (parametrisation, width)
is trained over a learning-rate grid in factors of 2, extended one point at a time while its
best point is at an end, so every optimum is interior. lr* is the vertex of a parabola in
log2(lr) through the best grid point and its two neighbours (the grid's best is reported too).

The measure: max(lr*) / min(lr*) over the widths, per parametrisation. Goal: μP under 2x.
Results go to docs/mup_bench.json; docs/benchmarks.md quotes them.

    python -m bench.bench_mup [--tokens 262144] [--widths 32 64 128 256] [--jobs 2]
    python -m bench.bench_mup --time-only     # seconds per trial at each width, to size --tokens
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

PARAMS = ("sp", "mup")
LOG2_RANGE = (-16, 0)  # the grid never leaves 2^-16 .. 1


def trial_config(width: int, log2_lr: int, base: int, args, root: str):
    from workers.config import DataConfig, TrainConfig, TrialConfig
    from workers.gpt.arch import GPTShape

    shape = GPTShape(n_layer=args.layers, d_model=width, n_head=width // args.head_dim, vocab_size=256,
                     seq_len=args.seq_len)
    tc = TrainConfig(lr=2.0**log2_lr, batch_tokens=args.batch_tokens, n_evals=0, log_every=50,
                     checkpoint_every_s=0)
    data = DataConfig(builtin="python-stdlib", eval_tokens=args.eval_tokens)
    tid = f"w{width}-b{base}-lr{log2_lr}"
    return TrialConfig(trial_id=tid, name=tid, sweep="bench_mup", shape=shape, tokens=args.tokens, seed=0,
                       budget=0.0, train=tc, data=data, results=root, threads=1, device="cpu",
                       mup_base_width=base)


def run_one(width: int, log2_lr: int, base: int, args) -> tuple[float, float]:
    """(final eval loss, inf if diverged; wall seconds) of one trial, in a pool process."""
    from workers.run import run_trial

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        loss = run_trial(trial_config(width, log2_lr, base, args, root)).eval_loss
    return (loss if math.isfinite(loss) else math.inf), time.perf_counter() - t0


def parabola_vertex(grid: dict[int, float]) -> tuple[int, float]:
    """(log2 of the grid's best lr, log2 of the vertex of the parabola through it and its two
    neighbours); the vertex is kept within one grid step of the best point."""
    best = min(grid, key=grid.get)
    lo, mid, hi = grid.get(best - 1, math.inf), grid[best], grid.get(best + 1, math.inf)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return best, float(best)
    curvature = lo - 2 * mid + hi
    offset = 0.5 * (lo - hi) / curvature if curvature > 0 else 0.0
    return best, best + max(-1.0, min(1.0, offset))


def next_point(grid: dict[int, float]) -> int | None:
    """The grid point to add while the best is at an end (None once it is interior)."""
    best, lo, hi = min(grid, key=grid.get), min(grid), max(grid)
    if best == lo and lo > LOG2_RANGE[0]:
        return lo - 1
    if best == hi and hi < LOG2_RANGE[1]:
        return hi + 1
    return None


def sweep(args) -> tuple[dict, list[dict]]:
    """Train every series' grid (extended as needed) on ``args.jobs`` processes.
    Returns ({(param, width): {log2 lr: loss}}, one record per trial)."""
    base = min(args.widths)
    grids: dict[tuple[str, int], dict[int, float]] = {(p, w): {} for p in PARAMS for w in args.widths}
    trials: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = {}

        def submit(param, width, k):
            fut = pool.submit(run_one, width, k, base if param == "mup" else 0, args)
            pending[fut] = (param, width, k)

        # Widest first: the longest trials start early and the short ones fill in around them.
        for width in sorted(args.widths, reverse=True):
            for param in PARAMS:
                for k in range(args.grid[0], args.grid[1] + 1):
                    submit(param, width, k)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                param, width, k = pending.pop(fut)
                loss, wall = fut.result()
                grids[(param, width)][k] = loss
                trials.append({"param": param, "width": width, "lr": 2.0**k, "eval_loss": loss, "wall_s": wall})
                print(f"{param:>3} d={width:<4} lr=2^{k:<3} ({2.0**k:.3g}) loss {loss:.4f}  {wall:.0f} s", flush=True)
                if not any(key[:2] == (param, width) for key in pending.values()):
                    k_next = next_point(grids[(param, width)])
                    if k_next is not None:
                        submit(param, width, k_next)
    return grids, trials


def summarise(grids: dict, widths: list[int]) -> dict:
    out = {}
    for param in PARAMS:
        rows = []
        for width in widths:
            grid = grids[(param, width)]
            best, vertex = parabola_vertex(grid)
            rows.append({"width": width, "lr_star": 2.0**vertex, "grid_best_lr": 2.0**best,
                         "best_loss": grid[best], "interior": next_point(grid) is None,
                         "grid": {f"{2.0**k:.6g}": grid[k] for k in sorted(grid)}})
        stars = [r["lr_star"] for r in rows]
        grid_bests = [r["grid_best_lr"] for r in rows]
        out[param] = {"widths": rows, "movement": max(stars) / min(stars),
                      "movement_grid_best": max(grid_bests) / min(grid_bests)}
    return out


def print_table(summary: dict, widths: list[int]) -> None:
    print(f"\n{'width':>6} | {'SP lr* (grid best)':>22} {'loss':>7} | {'μP lr* (grid best)':>22} {'loss':>7}")
    for i, width in enumerate(widths):
        cells = []
        for param in PARAMS:
            r = summary[param]["widths"][i]
            cells.append(f"{r['lr_star']:>10.3g} ({r['grid_best_lr']:>9.3g}) {r['best_loss']:>7.4f}")
        print(f"{width:>6} | {cells[0]} | {cells[1]}")
    for param in PARAMS:
        s = summary[param]
        print(f"{param}: lr* moves {s['movement']:.2f}x over {max(widths) // min(widths)}x width "
              f"(grid best: {s['movement_grid_best']:.2f}x)")


def time_only(args) -> None:
    """Seconds per trial at each width (one process, lr 2^-7), to choose --tokens."""
    for width in args.widths:
        loss, wall = run_one(width, -7, 0, args)
        print(f"d={width}: {wall:.1f} s for {args.tokens} tokens ({args.tokens / wall:,.0f} tokens/s), loss {loss:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=262144, help="training tokens per trial (the same for all)")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--grid", type=int, nargs=2, default=[-9, -5], metavar=("LO", "HI"),
                    help="initial grid: lr = 2^LO .. 2^HI (each series extends it while its best is at an end)")
    ap.add_argument("--jobs", type=int, default=2, help="trials at once (one thread each)")
    ap.add_argument("--out", default="docs/mup_bench.json")
    ap.add_argument("--time-only", action="store_true")
    args = ap.parse_args()
    if args.time_only:
        return time_only(args)

    t0 = time.perf_counter()
    grids, trials = sweep(args)
    widths = sorted(args.widths)
    summary = summarise(grids, widths)
    wall = time.perf_counter() - t0
    print_table(summary, widths)
    print(f"{len(trials)} trials, {wall / 60:.1f} min wall on {args.jobs} processes")
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "time_only")}
    result = {"settings": {**settings, "base_width": min(widths), "corpus": "python-stdlib"},
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d"), "wall_s": wall, "summary": summary, "trials": trials}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
