"""fewshot-bench: does SCHaNe beat cross-entropy when a pretrained backbone is fine-tuned
on a few labelled examples? Paired N-way K-shot episodes, per-episode fine-tuning,
confidence intervals.

The Python interface (the `bench` command line is a thin layer over the same functions):

    import fewshot_bench as fb
    result = fb.run(dataset="emoji", shots=5, methods="ce,schane", episodes=100)
    result.method_table          # mean accuracy per method, percent, with 95% CI
    df = fb.load_runs("results/*")   # every per-episode row of those runs, tidy

`run` writes into a new temporary folder unless given `out=`; `RunConfig` holds the
settings (see its docstring for fields and units); METHODS and TUNE_MODES name the valid
`methods` and `tune` values.
"""

from .api import load_runs, run
from .config import METHODS, TUNE_MODES, RunConfig

__version__ = "0.1.0"

__all__ = ["RunConfig", "run", "load_runs", "METHODS", "TUNE_MODES", "__version__"]
