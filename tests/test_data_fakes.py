"""Small fake data sets in each benchmark's exact on-disk format (real file names, pickle
keys and pickle flavours, folder layouts, image sizes; made-up pixels, few images per
class), shared by the tests/test_data_*.py modules; plus checks that torchvision's and
learn2learn's own readers accept the fakes, so the formats are the real ones.

Pixels carry their label where that is cheap to check: CIFAR red plane = fine label,
miniImageNet red = class number, so tests can verify the label of every loaded image.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot_bench.data.cifar import cifar100_classes, reference_split
from fewshot_bench.data.mini_imagenet import reference_split as mini_reference
from fewshot_bench.data.omniglot import VAL_ALPHABETS
from cli_helpers import explain, invoke  # noqa: F401  (explain is re-exported)

REPO = Path(__file__).resolve().parent.parent
SPLITS_MD = REPO.parent / "shared" / "reference" / "splits.md"
TINY_RUN = ["--episodes", "3", "--steps", "1", "--bank-views", "2", "--image-size", "32",
            "--queries", "2", "--shots", "1", "--ways", "2", "--no-progress", "--device", "cpu"]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python-2 `str` (BINSTRING opcodes), as CIFAR-100's python archive
    and MetaOptNet's FC100 pickles were written: readers must pass encoding='bytes' or
    'latin1'."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj, path: Path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def dump_py3(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def run_bench(cwd: Path, *args: str):
    """`bench ...` in `cwd` through click's CliRunner."""
    return invoke(list(args), cwd)


def tiny_run(cwd: Path, dataset: str, root: Path | None, *extra: str):
    args = ["run", "--dataset", dataset, *TINY_RUN, "--episodes-dir", str(cwd / "episodes"),
            "--out", str(cwd / f"out-{len(list(cwd.glob('out-*')))}")]
    if root is not None:
        args += ["--data-root", str(root)]
    return run_bench(cwd, *args, *extra)




def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --------------------------------------------------------------------------------------
# CIFAR-100 python archive (CIFAR-FS, FC100)
# --------------------------------------------------------------------------------------

def make_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """<root>/cifar-100-python/{train,test,meta}: Python-2 pickles with b'data' (uint8
    N x 3072, channel-major), b'fine_labels', b'coarse_labels', b'filenames',
    b'batch_label'; meta with b'fine_label_names', b'coarse_label_names'."""
    info = cifar100_classes()
    fine, coarse = info["fine_label_names"], info["coarse_label_names"]
    coarse_of = {f: coarse.index(c) for c, members in info["superclasses"].items() for f in members}
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        n = len(labels)
        planes = np.empty((n, 3, 32, 32), dtype=np.uint8)
        planes[:, 0] = labels[:, None, None]  # red = fine label
        planes[:, 1] = (np.arange(n) % 256)[:, None, None]  # green = row
        planes[:, 2] = np.arange(32, dtype=np.uint8)[None, None, :] * 4  # blue = column ramp
        dump_py2({
            b"filenames": [f"{fine[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)],
            b"batch_label": (b"training batch 1 of 1" if part == "train" else b"testing batch 1 of 1"),
            b"fine_labels": [int(y) for y in labels],
            b"coarse_labels": [coarse_of[fine[y]] for y in labels],
            b"data": planes.reshape(n, 3072),
        }, folder / part)
    dump_py2({b"fine_label_names": [f.encode() for f in fine],
              b"coarse_label_names": [c.encode() for c in coarse]}, folder / "meta")
    return folder


def make_l2l_cifarfs(root: Path, per_class: int = 3) -> Path:
    """learn2learn's CIFAR-FS zip, unpacked: cifarfs/cifar100/data/<class>/*.png (32x32)
    and cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt."""
    base = root / "cifarfs" / "cifar100"
    fine = cifar100_classes()["fine_label_names"]
    for y, name in enumerate(fine):
        d = base / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = np.full((32, 32, 3), (y, k, 7), dtype=np.uint8)
            (d / f"{name}_{k:04d}.png").write_bytes(png_bytes(img))
    (base / "splits" / "bertinetto").mkdir(parents=True, exist_ok=True)
    for split, classes in reference_split("cifar-fs").items():
        (base / "splits" / "bertinetto" / f"{split}.txt").write_text("\n".join(classes) + "\n")
    return root / "cifarfs"


def make_fc100_pickles(root: Path, per_class: int = 3) -> Path:
    """MetaOptNet's FC100_{train,val,test}.pickle (learn2learn's fc100.zip): Python-2
    pickles of {'data': uint8 N x 32 x 32 x 3, 'labels': CIFAR-100 fine label indices}."""
    fine = cifar100_classes()["fine_label_names"]
    root.mkdir(parents=True, exist_ok=True)
    for split, classes in reference_split("fc100").items():
        labels = np.repeat([fine.index(c) for c in classes], per_class)
        data = np.zeros((len(labels), 32, 32, 3), dtype=np.uint8)
        data[..., 0] = labels[:, None, None]
        dump_py2({b"data": data, b"labels": [int(v) for v in labels]},
                 root / f"FC100_{split}.pickle")
    return root


# --------------------------------------------------------------------------------------
# miniImageNet, tieredImageNet (learn2learn pickles)
# --------------------------------------------------------------------------------------

MINI_FILES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
              "test": "mini-imagenet-cache-test.pkl"}


def make_mini_imagenet(root: Path, per_class: int = 3, classes_per_split: int = 3) -> Path:
    """mini-imagenet-cache-{train,validation,test}.pkl: {'image_data': uint8 N x 84 x 84 x 3,
    'class_dict': {wnid: [row indices]}}; rows interleaved across classes."""
    root.mkdir(parents=True, exist_ok=True)
    for split, wnids in mini_reference().items():
        wnids = wnids[:classes_per_split]
        n = per_class * len(wnids)
        labels = np.arange(n) % len(wnids)  # interleaved rows
        images = np.zeros((n, 84, 84, 3), dtype=np.uint8)
        images[..., 0] = labels[:, None, None] * 10  # red = 10 x position in wnids
        class_dict = {w: [int(i) for i in np.flatnonzero(labels == j)] for j, w in enumerate(wnids)}
        dump_py3({"image_data": images, "class_dict": class_dict}, root / MINI_FILES[split])
    return root


def make_tiered_imagenet(root: Path, per_class: int = 3, classes_per_split: int = 3) -> Path:
    """tiered-imagenet/{split}_images_png.pkl (list of PNG-encoded 84x84 images as uint8
    arrays, like cv2.imencode output) and {split}_labels.pkl (label_specific,
    label_general, label_specific_str, label_general_str)."""
    folder = root / "tiered-imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for split in ("train", "val", "test"):
        n = per_class * classes_per_split
        specific = np.arange(n) % classes_per_split
        images = []
        for i, y in enumerate(specific):
            img = np.full((84, 84, 3), (int(y) * 20, i, 3), dtype=np.uint8)
            images.append(np.frombuffer(png_bytes(img), dtype=np.uint8))
        names = [f"n{9000000 + offset + j:08d}" for j in range(classes_per_split)]
        offset += classes_per_split
        dump_py3(images, folder / f"{split}_images_png.pkl")
        dump_py3({"label_specific": specific.astype(np.int64),
                  "label_general": np.zeros(n, dtype=np.int64),
                  "label_specific_str": names, "label_general_str": ["category_0"]},
                 folder / f"{split}_labels.pkl")
    return folder


# --------------------------------------------------------------------------------------
# CUB-200-2011, Omniglot, image folders
# --------------------------------------------------------------------------------------

def make_cub(root: Path, per_class: int = 3) -> Path:
    """CUB_200_2011/{classes,images,image_class_labels}.txt and images/<class>/<file>.jpg:
    200 classes, JPEGs of varied sizes (one grayscale per class)."""
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    classes, images, labels = [], [], []
    image_id = 0
    for c in range(1, 201):
        folder = f"{c:03d}.Bird_number_{c:03d}"
        classes.append(f"{c} {folder}")
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image_id += 1
            name = f"Bird_Number_{c:03d}_{k + 1:04d}_{1000 + image_id}.jpg"
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            if k == 0:
                Image.new("L", (w, h), 90).save(base / "images" / folder / name, quality=90)
            else:
                Image.new("RGB", (w, h), (c, k * 40, 200)).save(base / "images" / folder / name,
                                                                 quality=90)
            images.append(f"{image_id} {folder}/{name}")
            labels.append(f"{image_id} {c}")
    (base / "classes.txt").write_text("\n".join(classes) + "\n")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text(
        "\n".join(f"{i} {i % 2}" for i in range(1, image_id + 1)) + "\n")
    return base


OMNIGLOT_TRAIN_ALPHABETS = ("Latin", "Greek")
OMNIGLOT_TEST_ALPHABETS = ("Keble", "Tengwar")


def make_omniglot(root: Path, per_character: int = 3) -> Path:
    """omniglot-py/images_background (the 5 Meta-Dataset val alphabets + 2 others) and
    images_evaluation (2 alphabets): <alphabet>/character<NN>/<id>_<NN>.png, 105x105
    1-bit PNGs."""
    base = root / "omniglot-py"
    parts = {"images_background": OMNIGLOT_TRAIN_ALPHABETS + VAL_ALPHABETS,
             "images_evaluation": OMNIGLOT_TEST_ALPHABETS}
    char_id = 0
    for part, alphabets in parts.items():
        for alphabet in alphabets:
            n_chars = 1 if alphabet in VAL_ALPHABETS else 2
            for c in range(1, n_chars + 1):
                char_id += 1
                d = base / part / alphabet / f"character{c:02d}"
                d.mkdir(parents=True, exist_ok=True)
                for k in range(1, per_character + 1):
                    img = np.ones((105, 105), dtype=bool)
                    img[10 + c * 5:40 + k * 5, 20:60] = False
                    Image.fromarray(img).save(d / f"{char_id:04d}_{k:02d}.png")
    return base


def make_image_folder(path: Path, n_classes: int = 10, per_class: int = 3) -> Path:
    """PATH/<class>/<image> with mixed formats and modes: RGBA PNG, grayscale JPEG,
    palette GIF, BMP, WebP; sizes differ."""
    path.mkdir(parents=True, exist_ok=True)
    writers = [
        ("png", lambda k, c: Image.new("RGBA", (40 + k, 30), (c * 20, 0, 0, 255))),
        ("jpg", lambda k, c: Image.new("L", (50, 60 + k), c * 20)),
        ("gif", lambda k, c: Image.new("RGB", (33, 33), (0, c * 20, 0)).convert("P")),
        ("bmp", lambda k, c: Image.new("RGB", (64, 48), (0, 0, c * 20))),
        ("webp", lambda k, c: Image.new("RGB", (70, 70), (c * 20, c * 20, 0))),
    ]
    for c in range(n_classes):
        d = path / f"class_{c:02d}"
        d.mkdir(exist_ok=True)
        for k in range(per_class):
            ext, make = writers[(c + k) % len(writers)]
            make(k, c).save(d / f"img_{k}.{ext}")
    return path


# --------------------------------------------------------------------------------------
# the fakes are read by the reference implementations' own readers
# --------------------------------------------------------------------------------------

def test_fake_cifar100_is_read_by_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    from torchvision.datasets import CIFAR100

    make_cifar100(tmp_path)
    # skip the md5 checks of the real files; the reading code is torchvision's own
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    ds = CIFAR100(str(tmp_path), train=True, download=False)
    assert ds.classes == cifar100_classes()["fine_label_names"]
    assert len(ds) == 200 and ds.data.shape == (200, 32, 32, 3)
    assert ds.data[5, 0, 0, 0] == ds.targets[5]  # red plane = fine label after HWC transpose


def test_fake_omniglot_is_read_by_torchvision(tmp_path, monkeypatch):
    from torchvision.datasets import Omniglot

    make_omniglot(tmp_path)
    monkeypatch.setattr(Omniglot, "_check_integrity", lambda self: True)
    ds = Omniglot(str(tmp_path), background=False, download=False)
    assert len(ds) == 2 * 2 * 3
    image, _ = ds[0]
    assert image.size == (105, 105)


@pytest.fixture(scope="module")
def l2l():
    return pytest.importorskip("learn2learn.vision.datasets")


def test_fake_l2l_pickles_are_read_by_learn2learn(tmp_path, l2l):
    make_mini_imagenet(tmp_path)
    mini = l2l.MiniImagenet(str(tmp_path), mode="validation")
    assert len(mini) == 9 and tuple(mini.x.shape[1:]) == (3, 84, 84)
    make_tiered_imagenet(tmp_path)
    tiered = l2l.TieredImagenet(str(tmp_path), mode="validation")
    image, label = tiered[4]
    assert image.size == (84, 84) and int(label) == 1
    make_fc100_pickles(tmp_path)
    fc = l2l.FC100(str(tmp_path), mode="test")
    assert len(fc) == 60 and fc.images.shape[1:] == (32, 32, 3)


def test_fake_cifarfs_folder_is_read_by_learn2learn(tmp_path, l2l):
    make_l2l_cifarfs(tmp_path, per_class=1)
    ds = l2l.CIFARFS(str(tmp_path), mode="test")
    assert len(ds.classes) == 20 and len(ds) == 20
    assert (tmp_path / "cifarfs" / "processed" / "val").is_dir()


def test_fake_cub_matches_learn2learn_class_folders(tmp_path, l2l):
    from learn2learn.vision.datasets.cu_birds200 import SPLITS

    make_cub(tmp_path, per_class=1)
    real = sorted(sum(SPLITS.values(), []))
    fake = sorted(p.name for p in (tmp_path / "CUB_200_2011" / "images").iterdir())
    assert len(real) == len(fake) == 200
    assert [r.split(".")[0] for r in real] == [f.split(".")[0] for f in fake]  # 001 .. 200
