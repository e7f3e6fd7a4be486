"""Why `--tune full` gains little from batching episodes on a CPU: a profile.

With the whole backbone trained per episode nothing is frozen, so the engine and the
reference loop run the same forward and backward passes of the whole network on the same
support views. Batching episodes can then only win what a larger batch wins per image.
This script measures exactly that, in one process:

  (1) forward + backward of the whole backbone (one set of weights) on B support views,
      time per image for B = one episode's views (5-way 1-shot x 2 views = 10) up to
      16 episodes' worth: the most any batching of episodes over shared weights could
      gain is the ratio of the first to the best;
  (2) the same for G episodes with their own weights, as the engine runs them
      (torch.func.vmap over stacked parameters, i.e. grouped convolutions), against G
      separate calls (the reference loop's shape);
  (3) a torch.profiler table of (2): the share of the time in convolution kernels.

    .venv/bin/python benchmarks/profile_full.py              # about 2 min on this CPU
    .venv/bin/python benchmarks/profile_full.py --image-size 64 --threads 1

Random-initialised weights and random pixels: neither changes the cost.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from fewshot_bench.backbones import create_backbone


def timed(fn, reps: int) -> float:
    fn()  # warm-up (allocations, oneDNN primitive caches)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--views", type=int, default=10, help="support views of one episode per step")
    p.add_argument("--groups", default="1,2,4,8,16", help="episodes batched together")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_backbone(a.backbone, pretrained=False).eval()  # as the engine: BN running stats
    params = {n: q.detach() for n, q in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    groups = [int(g) for g in a.groups.split(",")]
    print(f"{a.backbone}, {a.image_size} px, {a.views} views per episode, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    print("\n(1) shared weights: forward + backward on G episodes' views in one batch")
    base = None
    for g in groups:
        x = torch.randn(g * a.views, 3, a.image_size, a.image_size)

        def step():
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

        per_image = timed(step, a.reps) / (g * a.views)
        base = base or per_image
        print(f"  G={g:3d} batch {g * a.views:4d}: {1e3 * per_image:7.2f} ms/image, "
              f"{base / per_image:4.2f}x the single episode's")

    print("\n(2) own weights per episode: vmap over stacked parameters vs a loop of G calls")

    def loss_one(p, xe):
        return functional_call(model, {**p, **buffers}, (xe,)).square().mean()

    grad_one = torch.func.grad(loss_one)
    rows = []
    for g in groups:
        stacked = {n: q.unsqueeze(0).repeat(g, *[1] * q.dim()) for n, q in params.items()}
        xs = torch.randn(g, a.views, 3, a.image_size, a.image_size)
        t_vmap = timed(lambda: vmap(grad_one)(stacked, xs), a.reps)
        t_loop = timed(lambda: [grad_one(params, xs[i]) for i in range(g)], a.reps)
        rows.append((g, t_vmap, t_loop))
        print(f"  G={g:3d}: vmap {t_vmap:6.3f} s, loop {t_loop:6.3f} s, "
              f"loop / vmap {t_loop / t_vmap:4.2f}x")

    g = max(groups[:3])
    stacked = {n: q.unsqueeze(0).repeat(g, *[1] * q.dim()) for n, q in params.items()}
    xs = torch.randn(g, a.views, 3, a.image_size, a.image_size)
    vmap(grad_one)(stacked, xs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        vmap(grad_one)(stacked, xs)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower())
    print(f"\n(3) profile of (2) at G={g}: {100 * conv / total:.0f}% of self CPU time in "
          "convolution kernels; the top ops:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
