"""Throughput benchmark of issue 7: the engine against the straightforward per-episode loop,
for the default configuration and for `--tune full`.

A thin entry point over `benchmarks/speed.py` (which does all the measuring; see
benchmarks/README.md): it runs speed.py twice, each in its own process so that each
reports its own peak RSS,

  1. the default configuration (`bench run`'s defaults: 5-way 1-shot, tune=norm, 50 steps,
     the data set's image size), 100 engine episodes, the first 5 also through the
     reference loop;
  2. `--tune full` (the whole backbone fine-tuned per episode). On a CPU that is slow for
     both paths (both run the whole network forward and backward on every view at every
     step), so by default it uses a small case: 64 px, 10 steps, Adam lr 1e-4 (the default
     0.01 sends every fully tuned episode to chance accuracy), 4 engine episodes of which
     the first 2 also through the reference loop. Change it with --full-image-size,
     --full-steps, --full-lr, --full-episodes, --full-reference-episodes.

It ends with the exact line ``speedup=<ratio> max_acc_diff=<x>`` of the default
configuration.

    .venv/bin/python benchmarks/throughput.py
    .venv/bin/python benchmarks/throughput.py --threads 1 --skip-full
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SPEED = Path(__file__).resolve().parent / "speed.py"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--episodes", type=int, default=100, help="engine episodes, default case")
    p.add_argument("--reference-episodes", type=int, default=5,
                   help="reference-loop episodes, default case")
    p.add_argument("--full-episodes", type=int, default=4, help="engine episodes, tune=full")
    p.add_argument("--full-reference-episodes", type=int, default=2,
                   help="reference-loop episodes, tune=full")
    p.add_argument("--full-steps", type=int, default=10, help="steps per episode, tune=full")
    p.add_argument("--full-image-size", type=int, default=64, help="input size, tune=full")
    p.add_argument("--full-lr", type=float, default=1e-4,
                   help="Adam lr, tune=full (the default 0.01 wrecks a fully tuned backbone: "
                        "every accuracy falls to chance, which makes agreement meaningless)")
    p.add_argument("--skip-full", action="store_true", help="only the default configuration")
    p.add_argument("--threads", type=int, default=None, help="passed to speed.py")
    p.add_argument("--device", default=None, help="passed to speed.py")
    p.add_argument("--episodes-dir", default=None, help="passed to speed.py")
    return p.parse_args(argv)


def run_speed(args: list[str]) -> str:
    """Run speed.py with `args`, echoing its output; return its last line."""
    print(f"$ {Path(sys.executable).name} benchmarks/speed.py {' '.join(args)}", flush=True)
    proc = subprocess.Popen([sys.executable, str(SPEED), *args], stdout=subprocess.PIPE,
                            text=True)
    last = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        last = line.strip() or last
    if proc.wait():
        raise SystemExit(f"speed.py {' '.join(args)} failed with exit status {proc.returncode}")
    if not last.startswith("speedup="):
        raise SystemExit(f"speed.py {' '.join(args)} did not end with speedup=...")
    return last


def main(argv=None) -> int:
    a = parse_args(argv)
    common = [f"--{k.replace('_', '-')}={v}" for k, v in
              (("threads", a.threads), ("device", a.device), ("episodes_dir", a.episodes_dir))
              if v is not None]
    print("== 1. default configuration ==", flush=True)
    default = run_speed([f"--episodes={a.episodes}",
                         f"--reference-episodes={a.reference_episodes}", *common])
    full = None
    if not a.skip_full:
        small = (f"a SMALL case for the CPU: {a.full_image_size} px, {a.full_steps} steps, "
                 f"lr {a.full_lr:g}, {a.full_episodes} engine / {a.full_reference_episodes} "
                 "reference episodes")
        print(f"\n== 2. --tune full, {small} ==", flush=True)
        full = run_speed(["--tune=full", f"--image-size={a.full_image_size}",
                          f"--steps={a.full_steps}", f"--lr={a.full_lr}",
                          f"--episodes={a.full_episodes}",
                          f"--reference-episodes={a.full_reference_episodes}", *common])
    print("\n== summary ==")
    print(f"default configuration : {default}")
    if full is not None:
        print(f"--tune full ({small}) : {full}")
    print(default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
