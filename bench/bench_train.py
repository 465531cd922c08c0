"""Training throughput: the worker's loop against a bare PyTorch loop, same model, same batches.

Both train the same GPT shape from the same seed on the same (seed, step) batches with the
same AdamW, gradient clipping and learning-rate schedule, one CPU thread (or the GPU). The
worker's throughput is read from its own step rows between the first and the last log
boundary before the final evaluation, so evaluation and the Parquet commit are excluded, as
they are from the bare loop; everything else the worker does per step (metric accumulation,
the log-boundary bookkeeping, checkpoint clock checks) is included. Goal: ratio >= 0.95.

    python -m bench.bench_train [--params 160000] [--steps 400] [--device cpu]

On a GPU it also reports model FLOPs utilisation (MFU: training FLOPs per token, attention
included, times tokens/s, over the GPU's dense bf16 peak), e.g. for a 124M-parameter model:

    python -m bench.bench_train --device cuda --params 124e6 --seq-len 1024 --batch-tokens 262144 \
        --steps 60 --compile
"""

from __future__ import annotations

import argparse
import tempfile
import time



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=float, default=160e3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile (the worker's train.compile)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak for MFU (default: 989.4 for H100/H200, else none)")
    args = ap.parse_args()

    import torch

    from workers.gpt.arch import shape_for_params
    from workers.gpt.data import load_corpus
    from workers.flops import model_flops_per_token
    from workers.run import run_trial
    from workers.gpt.train import _autocast, _device, _optimizer, lr_at
    from workers.store import ResultStore
    from workers.gpt.model import GPT
    from workers.config import DataConfig, TrainConfig, TrialConfig

    if args.device == "cpu":
        torch.set_num_threads(1)
    data = DataConfig(builtin="python-stdlib", eval_tokens=4096)
    corpus = load_corpus(data)
    shape = shape_for_params(args.params, corpus.vocab_size, args.seq_len)
    tc = TrainConfig(batch_tokens=args.batch_tokens, n_evals=0, log_every=10, checkpoint_every_s=0,
                     compile=args.compile)
    device = _device(args.device)
    with tempfile.TemporaryDirectory() as root:
        cfg = TrialConfig(trial_id="bench", name="bench", sweep="bench", shape=shape, tokens=args.steps * args.batch_tokens,
                          seed=0, budget=0.0, train=tc, data=data, results=root, device=args.device)
        run_trial(cfg)
        rows = sorted(ResultStore(root).read_table("steps").to_pylist(), key=lambda r: r["step"])
    first, last = rows[0], rows[-2]  # rows[-1] includes the final evaluation
    worker_tps = (last["tokens"] - first["tokens"]) / (last["wall_s"] - first["wall_s"])

    torch.manual_seed(0)
    model = GPT(shape).to(device)
    opt = _optimizer(model, tc, device)
    forward = torch.compile(model) if args.compile else model
    batch = args.batch_tokens // args.seq_len
    lo, hi = first["step"], last["step"]  # time the same steps
    for step in range(hi):
        if step == lo:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, tc)
        x, y = corpus.batch(0, step, batch, args.seq_len)
        with _autocast(device):
            _, loss = forward(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    bare_tps = (hi - lo) * args.batch_tokens / (time.perf_counter() - t0)
    print(f"shape {shape} ({shape.n_params} params), {args.batch_tokens}-token batches, device {device}")
    print(f"worker {worker_tps:,.0f} tokens/s, bare loop {bare_tps:,.0f} tokens/s, ratio {worker_tps / bare_tps:.3f}")
    peak = args.peak_tflops
    if peak is None and device.type == "cuda" and any(g in torch.cuda.get_device_name() for g in ("H100", "H200")):
        peak = 989.4  # dense bf16 tensor-core peak of an H100/H200 SXM
    if peak:
        per_token = model_flops_per_token(shape.n_params, shape.n_layer, shape.d_model, shape.seq_len)
        print(f"{torch.cuda.get_device_name() if device.type == 'cuda' else device}: {per_token:.3g} training FLOPs "
              f"per token; MFU worker {worker_tps * per_token / (peak * 1e12):.1%}, bare loop "
              f"{bare_tps * per_token / (peak * 1e12):.1%} of {peak} TFLOP/s; peak memory "
              f"{torch.cuda.max_memory_allocated() / 2**30 if device.type == 'cuda' else 0:.1f} GiB")


if __name__ == "__main__":
    main()
