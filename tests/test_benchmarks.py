"""The speed benchmark still runs (it imports the engine and the reference loop, which
refactors can break without any other test noticing) and its two paths agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_speed_benchmark_runs_and_agrees(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--episodes", "2",
         "--reference-episodes", "1", "--steps", "2", "--image-size", "32",
         "--episodes-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"speedup=([0-9.]+) max_acc_diff=([0-9.e-]+)", last)
    assert m, last
    assert float(m.group(1)) > 0 and float(m.group(2)) == 0


def test_logreg_benchmark_runs_and_agrees(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "logreg.py"), "--episodes", "4",
         "--image-size", "32", "--episodes-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"speedup=([0-9.]+) agreement=([0-9.]+)", last)
    assert m, last
    assert float(m.group(1)) > 0 and float(m.group(2)) >= 0.9


def test_full_profile_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_full.py"), "--image-size", "32",
         "--views", "2", "--groups", "1,2", "--reps", "1", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"G=  2 batch    4: +[0-9.]+ ms/image", proc.stdout), proc.stdout
    assert re.search(r"[0-9]+% of self CPU time in convolution kernels", proc.stdout), proc.stdout


def test_last_ceiling_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ceiling_last.py"), "--image-size", "32",
         "--group", "2", "--steps", "2", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"ceiling: +[0-9.]+ s = [0-9.]+ s per episode", proc.stdout), proc.stdout
    assert re.search(r"^engine_vs_ceiling=[0-9.]+$", proc.stdout, re.M), proc.stdout
