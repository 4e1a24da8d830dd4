"""Peak memory and time of one relative-attention layer, forward + backward: naive vs skew vs chunked.

One layer as in the Music Transformer: 8 heads, head_dim 64, batch 1, max relative position
1024, at lengths L = 512, 1024, ... An implementation stops once its peak passes the memory
budget (or its predicted peak is far past it).

What "peak memory" is:
- on CUDA: ``torch.cuda.max_memory_allocated`` during forward + backward, minus what was
  allocated before (inputs included in neither);
- on the CPU: each measurement runs in a fresh subprocess; after a small warm-up call, the peak
  resident set size (``ru_maxrss``) reached during forward + backward minus the resident size just
  before it. This is what the operating system had to provide, allocator slack included.

On a CPU the full 16384-token sweep takes long, so the defaults there stop at 8192 with a
1 GB budget; ``--lengths`` and ``--budget-gb`` set the sweep (the issue's figures: 512 ... 16384
and 16 GB on a GPU). The ratios printed: chunked's peak at 4x the length (linear: ~4x; skew: 16x),
and the longest length each implementation ran within the budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

HEADS, HEAD_DIM, MAX_REL = 8, 64, 1024
IMPLS = ("naive", "skew", "chunked")


def measure(impl: str, length: int, chunk_size: int, device: str) -> dict:
    """Peak bytes and seconds of one forward + backward (in this process)."""
    import resource

    import torch

    from cadenza.symbolic.attention import relative_attention

    torch.manual_seed(0)

    def inputs(n):
        q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, device=device, requires_grad=True) for _ in range(3))
        rel_emb = torch.randn(HEADS, MAX_REL, HEAD_DIM, device=device, requires_grad=True)
        return q, k, v, rel_emb

    def step(tensors):
        out = relative_attention(*tensors, impl=impl, chunk_size=chunk_size)
        out.backward(torch.ones_like(out))

    step(inputs(64))  # warm-up: kernels, thread pools
    tensors = inputs(length)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        step(tensors)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/statm") as f:
            before = int(f.read().split()[1]) * resource.getpagesize()
        start = time.perf_counter()
        step(tensors)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"impl": impl, "length": length, "peak_bytes": int(peak), "seconds": seconds}


def predicted_bytes(impl: str, length: int, chunk_size: int) -> float:
    """A rough upper estimate, only to skip runs that would exhaust the machine."""
    if impl == "naive":
        return 3.0 * HEADS * length * length * HEAD_DIM * 4
    if impl == "skew":
        return 8.0 * HEADS * length * length * 4
    return 8.0 * HEADS * min(chunk_size, length) * length * 4 + 16.0 * HEADS * length * HEAD_DIM * 4


def run_in_subprocess(impl: str, length: int, chunk_size: int, device: str) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, "--worker", impl, str(length), "--chunk-size", str(chunk_size),
                           "--device", device], capture_output=True, text=True)
    if proc.returncode != 0:
        return None  # killed (out of memory) or failed
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--lengths", help="comma-separated lengths (default: 512..16384 on CUDA, 512..8192 on CPU)")
    parser.add_argument("--budget-gb", type=float, help="memory budget (default 16 on CUDA, 1 on CPU)")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args.chunk_size, args.device)))
        return
    cuda = args.device == "cuda"
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else \
        [512, 1024, 2048, 4096, 8192] + ([16384] if cuda else [])
    budget = (args.budget_gb or (16.0 if cuda else 1.0)) * 1e9
    print(f"one relative attention layer, forward + backward: batch 1, {HEADS} heads, head_dim {HEAD_DIM}, "
          f"max_relative_position {MAX_REL}, chunk {args.chunk_size}, on {args.device}; budget {budget / 1e9:g} GB")
    print(f"peak memory: {'torch.cuda.max_memory_allocated' if cuda else 'peak RSS growth in a fresh process'}")
    print(f"{'impl':8s} {'L':>6s} {'peak MB':>10s} {'seconds':>9s}")
    results: dict[str, dict[int, dict]] = {impl: {} for impl in IMPLS}
    for impl in IMPLS:
        for length in lengths:
            if predicted_bytes(impl, length, args.chunk_size) > 5 * budget:
                print(f"{impl:8s} {length:6d} {'skipped: predicted far past the budget':>30s}")
                break
            result = measure(impl, length, args.chunk_size, args.device) if cuda else \
                run_in_subprocess(impl, length, args.chunk_size, args.device)
            if result is None:
                print(f"{impl:8s} {length:6d} {'failed (out of memory)':>30s}")
                break
            results[impl][length] = result
            print(f"{impl:8s} {length:6d} {result['peak_bytes'] / 1e6:10.1f} {result['seconds']:9.2f}", flush=True)
            if result["peak_bytes"] > budget:
                break
    longest = {impl: max((n for n, r in results[impl].items() if r["peak_bytes"] <= budget), default=0)
               for impl in IMPLS}
    for impl in IMPLS:
        print(f"longest length within {budget / 1e9:g} GB: {impl} {longest[impl]}")
    for impl in ("skew", "chunked"):
        measured = sorted(results[impl])
        pairs = [(n, 4 * n) for n in measured if 4 * n in results[impl]]
        for short, long in pairs:
            ratio = results[impl][long]["peak_bytes"] / results[impl][short]["peak_bytes"]
            print(f"{impl} peak at L={long} / at L={short}: {ratio:.2f}x (4x the length)")
    chunked_pairs = [(n, 4 * n) for n in sorted(results["chunked"]) if 4 * n in results["chunked"]]
    if chunked_pairs:
        short, long = chunked_pairs[-1]
        growth = results["chunked"][long]["peak_bytes"] / results["chunked"][short]["peak_bytes"]
    else:
        growth = float("nan")
    reach = longest["chunked"] / longest["skew"] if longest["skew"] else float("inf")
    print(f"chunked reaches {reach:.1f}x skew's longest length in the same memory; "
          f"chunked peak grows {growth:.2f}x for 4x the length")


if __name__ == "__main__":
    main()
