"""Smoke test of benchmarks/gpu.py on a CPU with a tiny setting: it runs the engine end to
end and ends with its machine-readable line. No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"
LAST_LINE = re.compile(r"^images_per_s=(\S+) tflops=(\S+) peak_share=(\S+)(?: \S+=\S+)*$")


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_runs_on_cpu(tmp_path, capsys):
    gpu = _load()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--backbone", "test_vit",
                     "--image-size", "32", "--shots", "1", "--ways", "2", "--queries", "2",
                     "--bank-views", "2", "--episode-batch", "2", "--steps", "1",
                     "--episodes", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "random init" in text.lower()
    assert "not applicable on a CPU" in text
    last = text.strip().splitlines()[-1]
    m = LAST_LINE.match(last)
    assert m, last
    images_per_s, tflops, share = (float(v) for v in m.groups())
    assert math.isfinite(images_per_s) and images_per_s > 0
    assert math.isfinite(tflops) and tflops > 0
    assert math.isnan(share)  # no peak on a CPU
    result = json.loads(out.read_text())
    best = result["best"]
    assert best["status"] == "ok" and best["episode_batch"] == 2 and best["peak_share"] is None
    # FLOPs are measured: forward+backward of a training image is about 3 forwards
    assert result["forward_flops_per_image"] > 0
    assert 2.0 < best["train_flops_per_image"] / result["forward_flops_per_image"] < 3.5


def test_known_peaks():
    gpu = _load()
    assert gpu.known_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989.4)
    assert gpu.known_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756.0)
    assert gpu.known_peak("NVIDIA H200") == ("H200", 989.4)
    assert gpu.known_peak("NVIDIA A100-SXM4-80GB") == ("A100", 312.0)
    assert gpu.known_peak("NVIDIA A10") == ("A10", 125.0)
    assert gpu.known_peak("NVIDIA L4") == ("L4", 121.0)
    assert gpu.known_peak("NVIDIA L40S") == ("L40S", 362.0)
    assert gpu.known_peak("NVIDIA GeForce RTX 4090") == ("RTX 4090", 165.2)
    assert gpu.known_peak("NVIDIA L40")[1] is None
    assert gpu.known_peak("NVIDIA A10G")[1] is None
    assert gpu.known_peak("Tesla T4") == (None, None)
