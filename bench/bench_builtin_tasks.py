"""Built-in multiple-choice tasks against compute: do tiny byte-level GPTs get better at them?

Trains a handful of the quickstart's byte-level GPTs (specs/quickstart.yaml: 9k-220k parameters,
budgets 2e11-2e12 FLOPs; aspect ratio 32, head size 8, AdamW, lr 6e-3 cosine to 10 %, 5 %
warmup, 1,024-token batches of 8 x 128) on the Python standard library's source, and scores
every built-in task (workers.evals.builtin) on the held-out blocks at a few checkpoints of each
run: accuracy, length-normalised accuracy and the gold continuations' bits per byte against the
training compute so far, C = 6 N D. It also prints two artifact baselines per task (always the
shortest choice, always the longest), which must sit near chance, and the scoring speed in
items per second, to keep task evaluation a small share of a trial's wall time. For indent it
also prints always the choice as deep as the line before.

    python -m bench.bench_builtin_tasks [--n-items 400] [--threads 2] [--cache DIR] [--out FILE]

``--cache DIR`` keeps each checkpoint's weights there and reuses them on the next run (to re-score
changed tasks without training again). Results: docs/benchmarks.md, "Built-in tasks".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from workers.config import DataConfig, TrainConfig
from workers.evals.builtin import BUILTIN_TASKS, builtin_task
from workers.evals.scoring import byte_encoder, encode_task, score
from workers.flops import tokens_for_budget, train_flops
from workers.gpt.arch import ShapeRule, shape_for_params
from workers.gpt.data import load_corpus
from workers.gpt.model import build_model
from workers.gpt.train import _optimizer, lr_at

SEQ_LEN = 128
# (target parameters, budget FLOPs): the smallest and largest quickstart sizes at their budgets,
# and two near each budget's IsoFLOP optimum (README: 16.8k at 2e11, 30.4k at 6e11, 67.9k at 2e12).
POINTS = ((9e3, 2e11), (25e3, 6e11), (74e3, 2e12), (220e3, 2e12))
CHECKPOINTS = (1 / 9, 1 / 3, 1.0)  # fractions of each run's steps at which the tasks are scored


def held_out_text(corpus) -> list[str]:
    """The corpus's held-out blocks as text, the way the tasks see them."""
    bt = corpus.block_tokens
    return [bytes(np.asarray(corpus.tokens[b * bt:(b + 1) * bt])).decode("utf-8", errors="replace")
            for b in corpus.eval_blocks]


def train_run(corpus, n_target: float, budget: float, cache: str | None):
    """Yield (shape, steps done, model) at each checkpoint of one quickstart-style trial."""
    shape = shape_for_params(n_target, corpus.vocab_size, SEQ_LEN, ShapeRule(head_dim=8, aspect_ratio=32))
    tc = TrainConfig(lr=6e-3, min_lr_ratio=0.1, warmup_fraction=0.05, batch_tokens=1024, weight_decay=0.1,
                     betas=(0.9, 0.95))
    steps = max(20, round(tokens_for_budget(budget, shape.n_params) / tc.batch_tokens))
    stops = sorted({max(1, round(f * steps)) for f in CHECKPOINTS})
    paths = [os.path.join(cache, f"{shape.n_params}-{budget:.0e}-{s}.pt") if cache else None for s in stops]
    torch.manual_seed(0)
    model = build_model(shape)
    if cache and all(os.path.exists(p) for p in paths):
        for s, p in zip(stops, paths):
            model.load_state_dict(torch.load(p, weights_only=True))
            yield shape, s, steps, model, 0.0
        return
    opt = _optimizer(model, tc, torch.device("cpu"))
    t0, done = time.perf_counter(), 0
    for stop, path in zip(stops, paths):
        model.train()
        for step in range(done, stop):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, tc) * g["lr_mult"]
            x, y = corpus.batch(0, step, tc.batch_tokens // SEQ_LEN, SEQ_LEN)
            _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
        done = stop
        model.eval()
        if path:
            os.makedirs(cache, exist_ok=True)
            torch.save(model.state_dict(), path)
        yield shape, stop, steps, model, time.perf_counter() - t0


def held_out_loss(model, corpus) -> float:
    """Mean held-out loss in nats per byte over the first 16k held-out tokens."""
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in corpus.eval_batches(16384, 32, SEQ_LEN):
            _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
            total, n = total + loss.item() * x.size, n + x.size
    return total / n


def artifact_baselines(task) -> dict:
    """Accuracy of always picking the shortest / longest choice (ties count as wrong), and for
    indent of always the choice as deep as the context's last non-blank line."""
    out = {}
    for name, pick in (("shortest", min), ("longest", max)):
        hits = 0
        for it in task.items:
            lens = [len(c) for c in it.choices]
            best = pick(lens)
            hits += lens[it.gold] == best and lens.count(best) == 1
        out[name] = hits / len(task.items)
    if task.name == "indent":
        out["previous"] = sum(_depth(it.choices[it.gold]) == _depth(_last_line(it.context))
                              for it in task.items) / len(task.items)
    return out


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _last_line(context: str) -> str:
    return [line for line in context.split("\n") if line.strip()][-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-items", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=None, help="directory for checkpoint weights (reused when present)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    corpus = load_corpus(DataConfig(builtin="python-stdlib", eval_fraction=0.02))
    blocks = held_out_text(corpus)
    tasks, encoded = {}, {}
    print(f"{len(blocks)} held-out blocks, {sum(map(len, blocks)):,} characters")
    for name in BUILTIN_TASKS:
        t0 = time.perf_counter()
        tasks[name] = builtin_task(name, blocks, n_items=args.n_items, seed=0)
        gen_s = time.perf_counter() - t0
        encoded[name] = encode_task(tasks[name], byte_encoder, SEQ_LEN)
        base = artifact_baselines(tasks[name])
        print(f"task {name}: {len(tasks[name].items)} items, chance {tasks[name].chance:.3f}, generated in "
              f"{gen_s:.2f} s; always-shortest {base['shortest']:.3f}, always-longest {base['longest']:.3f}"
              + (f", as deep as the line before {base['previous']:.3f}" if "previous" in base else ""))
        it = tasks[name].items[0]
        print(f"  e.g. context {it.context[-60:]!r}\n       choices {list(it.choices)} gold {it.gold}")
    rows = []
    for n_target, budget in POINTS:
        for shape, step, steps, model, train_s in train_run(corpus, n_target, budget, args.cache):
            c = float(train_flops(shape.n_params, step * 1024))
            row = {"n_params": shape.n_params, "n_layer": shape.n_layer, "d_model": shape.d_model,
                   "budget": budget, "step": step, "steps": steps, "flops": c, "train_s": train_s,
                   "eval_loss": held_out_loss(model, corpus)}
            for name in BUILTIN_TASKS:
                t0 = time.perf_counter()
                m = score(encoded[name], lambda x: model(x)[0], batch_tokens=8192)
                dt = time.perf_counter() - t0
                row[name] = m | {"score_s": dt, "items_per_s": m["n_items"] / dt}
            rows.append(row)
            print(f"N={shape.n_params:>7,} C={c:.2e} step {step}/{steps} loss {row['eval_loss']:.3f} | "
                  + " | ".join(f"{k} acc {row[k]['acc']:.3f} norm {row[k]['acc_norm']:.3f} "
                               f"bpb {row[k]['task_bpb']:.3f} ({row[k]['items_per_s']:.0f} it/s)"
                               for k in BUILTIN_TASKS), flush=True)
    print(f"\nAccuracy vs compute ({platform.machine()}, {args.threads} threads, "
          f"{time.perf_counter() - t_start:.0f} s in all)")
    print("| N | C (FLOPs) | loss | " + " | ".join(f"{k} acc / norm / bpb" for k in BUILTIN_TASKS) + " |")
    for r in rows:
        print(f"| {r['n_params']:,} | {r['flops']:.1e} | {r['eval_loss']:.3f} | "
              + " | ".join(f"{r[k]['acc']:.3f} / {r[k]['acc_norm']:.3f} / {r[k]['task_bpb']:.2f}"
                           for k in BUILTIN_TASKS) + " |")
    for name in BUILTIN_TASKS:
        speeds = [(r["n_params"], r[name]["items_per_s"]) for r in rows]
        print(f"scoring {name}: " + ", ".join(f"N={n:,}: {s:.0f} items/s" for n, s in speeds))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"tasks": {k: {"n_items": len(t.items), "chance": t.chance, "baselines": artifact_baselines(t)}
                                 for k, t in tasks.items()},
                       "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
