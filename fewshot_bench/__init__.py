"""fewshot-bench: does SCHaNe beat cross-entropy when a pretrained backbone is fine-tuned
on a few labelled examples? Paired N-way K-shot episodes, per-episode fine-tuning,
confidence intervals."""

__version__ = "0.1.0"
