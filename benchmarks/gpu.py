"""GPU throughput of the episode engine (issue 7): fine-tuning images/s, episodes/s, peak
memory, FLOPs and the share of the card's dense bf16 peak.

Uses the engine as `bench run` does (`split_backbone` -> `build_bank` -> `EpisodeFinetuner
.finetune`, bf16 autocast on CUDA), on synthetic random images (throughput does not depend on
the pixels) and a randomly initialised backbone (nor on the weights; timm's hub cannot be
reached). Default: `vit_small_patch16_224` at 224 px, `--tune full`, 5-way 1-shot and 5-shot,
15 queries, views 2, 10 steps, sweeping the episode batch (episodes trained together).

FLOPs are measured, not assumed: `torch.utils.flop_counter.FlopCounterMode` counts the
matmul / convolution / attention FLOPs of real `finetune()` calls of one episode with 1 and
with 2 steps; the difference is one training step (forward + backward of the support views),
the rest the fixed per-episode work (the final support loss and classifying the queries).
Optimizer and elementwise FLOPs are not counted (FlopCounterMode does not count them).

    python benchmarks/gpu.py                                   # the default sweep, on cuda
    python benchmarks/gpu.py --shots 1 --episode-batch 32 --compile
    python benchmarks/gpu.py --device cpu --backbone vit_tiny_patch16_224 --image-size 32 \\
        --shots 1 --episode-batch 2 --steps 1 --episodes 2    # a smoke test on a CPU

The last line is ``images_per_s=<x> tflops=<y> peak_share=<z|nan> ...`` for the fastest
configuration (most fine-tuning images per second); `--json PATH` writes everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from fewshot_bench.backbones import backbone_data_config, create_backbone  # noqa: E402
from fewshot_bench.bank import build_bank  # noqa: E402
from fewshot_bench.config import TUNE_MODES, RunConfig  # noqa: E402
from fewshot_bench.episodes import EpisodeSpec, sample_episodes  # noqa: E402
from fewshot_bench.finetune import EpisodeFinetuner, FinetuneConfig  # noqa: E402
from fewshot_bench.runner import episode_batch_size, method_config  # noqa: E402
from fewshot_bench.split import split_backbone  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendor data sheets, matched
# against torch.cuda.get_device_name() in this order (first match wins; None: unknown).
PEAK_BF16_TFLOPS: list[tuple[str, str, float | None]] = [
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100.*NVL", "H100 NVL", None),  # another peak; not in the table
    (r"H100", "H100 SXM", 989.4),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"H200.*NVL", "H200 NVL", None),
    (r"H200", "H200", 989.4),
    (r"A100", "A100", 312.0),
    (r"L40S", "L40S", 362.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),  # not A100, not A10G
    (r"RTX 4090", "RTX 4090", 165.2),
]


def known_peak(device_name: str) -> tuple[str | None, float | None]:
    """(table label, dense bf16 TFLOP/s) for a CUDA device name; (None, None) if unknown."""
    for pattern, label, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return label, peak
    return None, None


def _int_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="vit_small_patch16_224",
                   help="timm model name (random init)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--tune", choices=TUNE_MODES, default="full")
    p.add_argument("--ways", type=int, default=d.ways)
    p.add_argument("--shots", default="1,5", help="comma list; each is measured")
    p.add_argument("--queries", type=int, default=d.queries)
    p.add_argument("--views", type=int, default=d.views)
    p.add_argument("--bank-views", type=int, default=d.bank_views)
    p.add_argument("--steps", type=int, default=10, help="fine-tuning steps per episode")
    p.add_argument("--method", default="schane", choices=["ce", "schane"],
                   help="loss (costs the same up to the cheap loss itself)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam lr [default: 1e-4 with --tune full (0.01 wrecks a fully tuned "
                        "backbone), else bench run's]")
    p.add_argument("--episodes", type=int, default=64,
                   help="episodes timed per configuration (rounded up to whole groups)")
    p.add_argument("--episode-batch", default="auto,8,16,32,64",
                   help="comma list of episode group sizes to sweep; 'auto' = bench run's "
                        "own choice (runner.episode_batch_size)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16: bf16 autocast, as bench run does on CUDA; fp32: none, as bench "
                        "run on a CPU; auto: bf16 on CUDA, fp32 on a CPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="image inputs of the trained part (and frozen conv weights) in "
                        "channels-last layout")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the engine's forward of the trained part (falls back "
                        "to eager with a note if compiling fails); with --tune norm, the "
                        "engine's own compiled step instead (fused.py, bench run's default)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the card's dense bf16 peak [default: from the built-in table]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


# -- setup ----------------------------------------------------------------------------------


def make_backbone(name: str, size: int) -> torch.nn.Module:
    """Random init through `create_backbone`; a ViT is rebuilt for `size` (its position
    embedding is made for one input size), convnets take any size as they are."""
    model = create_backbone(name, pretrained=False)
    if hasattr(model, "patch_embed") and backbone_data_config(model)["input_size"][-1] != size:
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=size).eval()
    return model


def synthetic_images(n_classes: int, per_class: int, size: int, seed: int):
    """uint8 images [n_classes * per_class, size, size, 3] and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_classes * per_class, size, size, 3), dtype=np.uint8)
    return images, np.repeat(np.arange(n_classes), per_class)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def count_flops(engine: EpisodeFinetuner, support, query, seed: int, mcfg: FinetuneConfig):
    """Measured FLOPs of one episode: (fixed part, one training step)."""
    from torch.utils.flop_counter import FlopCounterMode

    totals = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as fc:
            engine.finetune(support[:1], query[:1], np.arange(1), seed,
                            dataclasses.replace(mcfg, steps=steps))
        totals.append(fc.get_total_flops())
    per_step = totals[1] - totals[0]
    return totals[0] - per_step, per_step


def forward_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Measured forward FLOPs of `module` on x (one input)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x)
    return fc.get_total_flops()


def _channels_last_5d(x: torch.Tensor) -> torch.Tensor:
    """[G, B, C, H, W] with every [C, H, W] image stored channels-last (C contiguous)."""
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


class ForwardPatch:
    """Swaps the engine's forward of the trained part (`_forward_episodes`, used by every
    training step and by the query pass) for a channels-last and/or compiled wrapper of the
    very same method, on this engine instance only; `eager()` goes back to the original."""

    def __init__(self, engine: EpisodeFinetuner, channels_last: bool, compile: bool):
        if not hasattr(engine, "_forward_episodes"):
            raise SystemExit("EpisodeFinetuner has no _forward_episodes: update "
                             "benchmarks/gpu.py's ForwardPatch to the engine")
        self.engine = engine
        self.original = engine._forward_episodes
        self.compiled = False

        def forward(params, x):
            if channels_last and x.dim() == 5:
                x = _channels_last_5d(x)
            return self.original(params, x)

        self.forward = forward
        if channels_last:
            engine._forward_episodes = forward
        if compile:
            cfg = torch._dynamo.config
            for name in ("recompile_limit", "cache_size_limit"):  # renamed in newer torch
                if hasattr(cfg, name):
                    setattr(cfg, name, max(getattr(cfg, name), 64))
            engine._forward_episodes = torch.compile(forward, dynamic=False)
            self.compiled = True

    def eager(self) -> None:
        self.engine._forward_episodes = self.forward
        self.compiled = False
        torch._dynamo.reset()


# -- one measurement ------------------------------------------------------------------------


def measure(engine, patch, support, query, batch, n_episodes, mcfg, seed, device, notes):
    """Warm up once with a group of `batch` episodes, then time `n_episodes` (whole groups)."""
    n = math.ceil(n_episodes / batch) * batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm = dataclasses.replace(mcfg, steps=min(mcfg.steps, 2))
    ids = np.arange(batch)
    try:
        engine.finetune(support[ids], query[ids], ids, seed, warm)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a compile failure of any kind
        if not patch.compiled:
            raise
        notes.append(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                     "measured eager instead")
        print(f"  note: {notes[-1]}", flush=True)
        patch.eager()
        _free(device)
        engine.finetune(support[ids], query[ids], ids, seed, warm)
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        ids = np.arange(start, start + batch)
        engine.finetune(support[ids], query[ids], ids, seed, mcfg)
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return n, seconds, peak


def _json_safe(x):
    """NaN and infinities -> None (strict JSON), other odd values -> str."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


# -- main -----------------------------------------------------------------------------------


def main(argv=None) -> int:
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device (use --device cpu for a "
                         "smoke test)")
    shots_list = [int(s) for s in _int_list(a.shots)]
    batches_arg = _int_list(a.episode_batch)
    if a.dtype == "auto":
        a.dtype = "bf16" if device.type == "cuda" else "fp32"
    autocast = torch.bfloat16 if a.dtype == "bf16" else None
    lr = a.lr if a.lr is not None else (1e-4 if a.tune == "full" else RunConfig(tune=a.tune).validate().lr)
    torch.manual_seed(a.seed)

    # the card and its peak
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        label, peak = known_peak(name)
        if a.peak_tflops:
            label, peak = "--peak-tflops", a.peak_tflops
        props = torch.cuda.get_device_properties(device)
        card = (f"{name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} "
                f"SMs, capability {props.major}.{props.minor}), CUDA {torch.version.cuda}")
        if peak:
            peak_note = f"dense bf16 peak {peak:g} TFLOP/s ({label})"
        else:
            peak_note = (f"dense bf16 peak unknown for {name!r} (not in the table): the share "
                         "is unknown; pass --peak-tflops")
    else:
        name, label, peak = platform.processor() or platform.machine(), None, None
        card = f"CPU {name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
        peak_note = "peak share: not applicable on a CPU"

    model = make_backbone(a.backbone, a.image_size)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data_cfg = backbone_data_config(model)
    split = split_backbone(model, a.tune)
    n_params = sum(p.numel() for n, p in split.upper.named_parameters() if n in split.trainable)

    print(f"fewshot-bench gpu: {a.backbone}, RANDOM INIT (throughput does not depend on the "
          f"weights; timm's hub cannot be reached), {a.image_size} px, tune={a.tune} "
          f"({n_params / 1e6:.1f} M trained parameters per episode), {a.ways}-way "
          f"{'/'.join(map(str, shots_list))}-shot, {a.queries} queries, views {a.views}, "
          f"bank views {a.bank_views}, {a.steps} steps, {a.method}, Adam lr {lr:g}")
    print(f"device: {card}; torch {torch.__version__}; dtype {a.dtype}"
          f"{' (autocast)' if autocast else ''}; channels_last "
          f"{'on' if a.channels_last else 'off'}; compile {'on' if a.compile else 'off'}")
    print(peak_note)
    print("data: synthetic random uint8 images (pixels do not change the cost)")

    # the bank: every synthetic image, as bench run builds it (on the device)
    n_classes = max(2 * a.ways, a.ways + 1)
    per_class = max(shots_list) + a.queries
    images, labels = synthetic_images(n_classes, per_class, a.image_size, a.seed)
    t = time.perf_counter()
    bank = build_bank(split.lower, images, np.arange(len(images)), n_views=a.bank_views,
                      size=a.image_size, mean=data_cfg["mean"], std=data_cfg["std"],
                      interpolation=data_cfg.get("interpolation", "bicubic"), seed=a.seed,
                      device=device, autocast_dtype=autocast, progress=False)
    _sync(device)
    print(f"bank: {tuple(bank.shape)} float32 ({bank.numel() * 4 / 2**30:.2f} GiB) in "
          f"{time.perf_counter() - t:.1f} s (not part of the timings)")
    fwd_image = forward_flops(split.upper.to(device), bank[:1, 0])
    print(f"forward FLOPs of the trained part, per image (measured): {fwd_image / 1e9:.3f} G")

    rows, notes = [], []
    result = dict(
        backbone=a.backbone, weights="random init", image_size=a.image_size, tune=a.tune,
        ways=a.ways, queries=a.queries, views=a.views, bank_views=a.bank_views,
        steps=a.steps, method=a.method, lr=lr, dtype=a.dtype, channels_last=a.channels_last,
        compile=a.compile, compile_stats=None, device=str(device), device_name=name,
        peak_label=label, peak_bf16_tflops=peak, torch=torch.__version__,
        cuda=torch.version.cuda, forward_flops_per_image=fwd_image, notes=notes, rows=rows,
        best=None, complete=False)

    def save() -> None:  # after every configuration, so a stopped run leaves its rows
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(_json_safe(result), indent=2) + "\n")

    for shots in shots_list:
        cfg = RunConfig(ways=a.ways, shots=shots, queries=a.queries, views=a.views,
                        bank_views=a.bank_views, steps=a.steps, lr=lr, tune=a.tune,
                        methods=(a.method,), device="cpu" if device.type == "cpu" else "cuda")
        cfg.validate()
        mcfg = method_config(cfg, a.method)
        auto = episode_batch_size(cfg, bank)
        batches = sorted({auto if b == "auto" else int(b) for b in batches_arg})
        n_max = max(math.ceil(a.episodes / b) * b for b in batches)
        eps = sample_episodes(labels, EpisodeSpec("synthetic", "test", a.ways, shots,
                                                  a.queries, n_max, a.seed), "synthetic")
        support = torch.from_numpy(eps.support).to(device)
        query = torch.from_numpy(eps.query).to(device)
        engine = EpisodeFinetuner(split, bank, ways=a.ways, shots=shots, device=device,
                                  autocast_dtype=autocast, compile=a.compile)
        fixed, per_step = count_flops(engine, support, query, a.seed, mcfg)
        train_images = a.ways * shots * a.views  # per episode and step
        per_train_image = per_step / train_images
        per_episode = fixed + a.steps * per_step
        print(f"\n== {a.ways}-way {shots}-shot: {train_images} support views per episode and "
              f"step; bench run would train groups of {auto} ==")
        print(f"measured FLOPs: forward+backward {per_train_image / 1e9:.3f} G per training "
              f"image ({per_train_image / max(fwd_image, 1):.2f}x the forward); fixed "
              f"{fixed / 1e9:.2f} G per episode (final support loss + {a.ways * a.queries} "
              f"queries, forward only); in all {per_episode / 1e9:.4g} G per episode at "
              f"{a.steps} steps, {a.steps * per_step / per_episode:.0%} of it training")
        patch = ForwardPatch(engine, a.channels_last, a.compile)
        print(f"{'group':>6} {'episodes':>8} {'seconds':>8} {'episodes/s':>11} "
              f"{'images/s':>10} {'TFLOP/s':>8} {'peak share':>10} {'peak mem':>10}")
        for i, b in enumerate(batches):
            row = dict(shots=shots, episode_batch=b, auto=b == auto,
                       train_flops_per_image=per_train_image, fixed_flops_per_episode=fixed,
                       flops_per_episode=per_episode)
            oom = False
            try:
                n, seconds, mem = measure(engine, patch, support, query, b, a.episodes, mcfg,
                                          a.seed, device, notes)
            except torch.cuda.OutOfMemoryError:
                oom = True  # freed below, once the exception no longer holds its frames
            if oom:
                _free(device)
                row["status"] = "out of memory"
                rows.append(row)
                print(f"{b:>6} out of memory; larger groups skipped")
                for b2 in batches[i + 1:]:
                    rows.append(dict(shots=shots, episode_batch=b2, auto=b2 == auto,
                                     status=f"skipped (group {b} ran out of memory)"))
                save()
                break
            images_s = n * a.steps * train_images / seconds
            tflops = n * per_episode / seconds / 1e12
            share = tflops / peak if peak else float("nan")
            row.update(status="ok", episodes=n, seconds=seconds, episodes_per_s=n / seconds,
                       images_per_s=images_s, tflops=tflops, peak_share=share,
                       peak_mem_gib=mem / 2**30, compiled=patch.compiled)
            rows.append(row)
            print(f"{b:>6}{'*' if b == auto else ' '}{n:>8} {seconds:>8.2f} {n / seconds:>11.2f} "
                  f"{images_s:>10.0f} {tflops:>8.2f} "
                  f"{(f'{share:.1%}' if peak else 'n/a'):>10} {mem / 2**30:>8.2f} GiB",
                  flush=True)
            save()
            _free(device)
        ok = [r for r in rows if r["shots"] == shots and r["status"] == "ok"]
        if ok:
            best = max(ok, key=lambda r: r["images_per_s"])
            print(f"fastest: groups of {best['episode_batch']} ({best['images_per_s']:.0f} "
                  f"images/s, {best['episodes_per_s']:.2f} episodes/s); * = bench run's choice")
        del engine, patch, support, query
        _free(device)

    print("\nimages/s: forward+backward support views per second (episodes x steps x "
          "ways x shots x views / seconds); TFLOP/s: measured FLOPs of the whole finetune() "
          "calls (training + final loss + queries) / seconds; peak mem: "
          + ("torch.cuda.max_memory_allocated" if device.type == "cuda"
             else "peak RSS of the process"))
    if a.compile:
        try:
            from torch._dynamo.utils import counters

            stats = dict(graphs=int(counters["stats"]["unique_graphs"]),
                         graph_breaks=int(sum(counters["graph_break"].values())))
            result["compile_stats"] = stats
            print(f"torch.compile: {stats['graphs']} graphs compiled, "
                  f"{stats['graph_breaks']} graph breaks")
        except Exception:  # noqa: BLE001 - private counters; informative only
            pass
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise SystemExit("no configuration fitted in memory")
    best = max(ok, key=lambda r: r["images_per_s"])
    result.update(best=best, complete=True)
    if a.json:
        save()
        print(f"wrote {a.json}")
    print(f"fastest overall: {a.ways}-way {best['shots']}-shot in groups of "
          f"{best['episode_batch']}")
    print(f"images_per_s={best['images_per_s']:.6g} tflops={best['tflops']:.6g} "
          f"peak_share={best['peak_share']:.4g} episodes_per_s={best['episodes_per_s']:.6g} "
          f"peak_mem_gib={best['peak_mem_gib']:.4g} shots={best['shots']} "
          f"episode_batch={best['episode_batch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
