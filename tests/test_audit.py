"""`bench data audit`: the pHash equals imagehash's, both pair searches agree with a plain
loop, a folder data set with planted duplicates (exact, resized, JPEG, across classes,
across splits) is audited exactly, the groups file has the sampler's format, bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from fewshot_bench.data import audit, create_dataset
from fewshot_bench.data.audit import (GROUP_COLUMNS, PAIR_COLUMNS, audit_dataset, audit_splits,
                                      find_pairs, phash_images, popcount64)
from fewshot_bench.data.base import ImageSplit
from fewshot_bench.data.folder import auto_split
from fewshot_bench.errors import BenchError
from test_data_fakes import explain, run_bench

CLASSES = [f"c{k}" for k in range(5)]


def _shapes(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A random background with four random rectangles or ellipses: distinct images of this
    kind are >= 10 bits apart (checked on 900), their resized or JPEG copies <= 4."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size - 16, 2))
        w, h = (int(v) for v in rng.integers(12, size // 2, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h],
                                                                 fill=fill)
    return img


def _resized(img: Image.Image) -> Image.Image:
    return img.resize((48, 48), Image.BICUBIC).resize((64, 64), Image.BICUBIC)


def _pairs(result) -> set[tuple]:
    """Each pair as (kind, exact, 'class/file', 'class/file'), files of folder data."""
    def short(p: str) -> str:
        return "/".join(Path(p).parts[-2:])
    return {(r.kind, bool(r.exact), short(r.path_a), short(r.path_b))
            for r in result.pairs.itertuples()}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A folder data set: 5 classes (3 train, 1 val, 1 test by the automatic split), 8
    distinct images each, and planted duplicates. Returns (path, split, expected pairs,
    expected train/test clusters as sets of 'class/file')."""
    path = tmp_path_factory.mktemp("audit") / "pics"
    split = auto_split(CLASSES)
    (a, b, _), val, test = split["train"], split["val"][0], split["test"][0]
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (path / c).mkdir(parents=True)
        for k in range(8):
            _shapes(rng).save(path / c / f"n{k}.png")

    def plant(cls: str, name: str) -> Image.Image:
        img = _shapes(rng)
        img.save(path / cls / name)
        return img

    p0 = plant(a, "p0.png")
    shutil.copy(path / a / "p0.png", path / a / "p0_copy.png")  # exact
    _resized(p0).save(path / a / "p0_small.png")
    plant(a, "p1.png").save(path / a / "p1_q75.jpg", quality=75)  # JPEG re-encoded
    _resized(plant(a, "p2.png")).save(path / b / "p2_small.png")  # across classes
    plant(b, "p3.png")
    shutil.copy(path / b / "p3.png", path / val / "p3_copy.png")  # across splits, exact
    plant(test, "p4.png").save(path / test / "p4_q75.jpg", quality=75)  # a test cluster
    expected = {
        ("within-class", True, f"{a}/p0.png", f"{a}/p0_copy.png"),
        ("within-class", False, f"{a}/p0.png", f"{a}/p0_small.png"),
        ("within-class", False, f"{a}/p0_copy.png", f"{a}/p0_small.png"),
        ("within-class", False, f"{a}/p1.png", f"{a}/p1_q75.jpg"),
        ("within-class", False, f"{test}/p4.png", f"{test}/p4_q75.jpg"),
        ("across-classes", False, f"{a}/p2.png", f"{b}/p2_small.png"),
        ("across-splits", True, f"{b}/p3.png", f"{val}/p3_copy.png"),
    }
    clusters = {"train": {frozenset({f"{a}/p0.png", f"{a}/p0_copy.png", f"{a}/p0_small.png"}),
                          frozenset({f"{a}/p1.png", f"{a}/p1_q75.jpg"}),
                          frozenset({f"{a}/p2.png", f"{b}/p2_small.png"})},
                "val": set(),  # p3_copy's twin is in train: across splits is not a group
                "test": {frozenset({f"{test}/p4.png", f"{test}/p4_q75.jpg"})}}
    return path, split, expected, clusters


@pytest.fixture(scope="module")
def result(planted):
    return audit_dataset(f"folder:{planted[0]}")


# --------------------------------------------------------------------------------------
# hashing and the pair search
# --------------------------------------------------------------------------------------

def test_phash_is_imagehash_bit_for_bit():
    rng = np.random.default_rng(1)
    images = np.concatenate([
        rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        np.stack([np.asarray(_shapes(rng, 84)) for _ in range(20)])[:, :32, :32],
        np.full((2, 32, 32, 3), 200, dtype=np.uint8),  # flat: ties at the median
    ])
    images.setflags(write=False)  # packaged and cached data are read-only arrays
    ours = phash_images(images)
    ref = [int(str(imagehash.phash(Image.fromarray(x))), 16) for x in images]
    assert ours.dtype == np.uint64 and [int(h) for h in ours] == ref
    assert audit.hash_hex(ours[:1]) == [str(imagehash.phash(Image.fromarray(images[0])))]


def _naive(h: np.ndarray, d: int) -> set[tuple[int, int]]:
    return {(i, j) for i in range(len(h)) for j in range(i + 1, len(h))
            if bin(int(h[i]) ^ int(h[j])).count("1") <= d}


@pytest.mark.parametrize("max_distance", [0, 1, 4, 7])
def test_index_and_brute_force_find_the_same_pairs_as_a_loop(max_distance):
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**64, 300, dtype=np.uint64)
    # near copies at every distance 0..8 (flipped bits), some sharing one original
    near = []
    for k in range(60):
        bits = rng.choice(64, k % 9, replace=False)
        near.append(base[k % 40] ^ np.uint64(sum(1 << int(b) for b in bits)))
    h = np.concatenate([base, np.array(near, dtype=np.uint64)])
    want = _naive(h, max_distance)
    assert len(want) >= 6
    for method in ("index", "brute", "auto"):
        i, j, d = find_pairs(h, max_distance, method)
        assert set(zip(i.tolist(), j.tolist())) == want, method
        assert (i < j).all() and list(zip(i, j)) == sorted(zip(i, j))
        assert (d == [bin(int(h[a]) ^ int(h[b])).count("1") for a, b in zip(i, j)]).all()


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    x = np.array([0, 1, 2**64 - 1, 0xF0F0, 2**63], dtype=np.uint64)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert popcount64(x).tolist() == [0, 1, 64, 8, 1]


def test_audit_splits_on_arrays_classifies_kinds_and_groups_per_split():
    rng = np.random.default_rng(2)
    imgs = {s: np.stack([np.asarray(_shapes(rng, 32)) for _ in range(6)]) for s in ("train", "val")}
    imgs["train"][3] = imgs["train"][0]  # same class (labels 0, 1, 2, 0, 1, 2)
    imgs["train"][4] = imgs["train"][0]  # other class: joins the same cluster
    imgs["val"][5] = imgs["train"][1]  # across splits
    data = [ImageSplit("toy", s, imgs[s], np.arange(6) % 3, ["x", "y", "z"]) for s in imgs]
    res = audit_splits(data, max_distance=0)
    got = {(r.kind, r.split_a, r.index_a, r.split_b, r.index_b, r.exact)
           for r in res.pairs.itertuples()}
    assert got == {("within-class", "train", 0, "train", 3, True),
                   ("across-classes", "train", 0, "train", 4, True),
                   ("across-classes", "train", 3, "train", 4, True),
                   ("across-splits", "train", 1, "val", 5, True)}
    assert res.counts() == {"within-class": 1, "across-classes": 2, "across-splits": 1}
    assert list(res.groups.columns) == GROUP_COLUMNS
    assert res.groups[["split", "index", "group", "class"]].values.tolist() == [
        ["train", 0, "dup-1", "x"], ["train", 3, "dup-1", "x"], ["train", 4, "dup-1", "y"]]
    assert set(res.groups["fingerprint"]) == {data[0].fingerprint()}


# --------------------------------------------------------------------------------------
# a folder data set with planted duplicates
# --------------------------------------------------------------------------------------

def test_folder_audit_finds_every_planted_pair_and_nothing_else(planted, result):
    path, split, expected, _ = planted
    assert _pairs(result) == expected  # nothing among the 40 distinct images
    assert result.images == {"train": 3 * 8 + 8, "val": 9, "test": 10}
    assert (result.pairs["distance"] <= audit.DEFAULT_MAX_DISTANCE).all()
    assert (result.pairs.loc[result.pairs["exact"], "distance"] == 0).all()
    assert list(result.pairs.columns) == PAIR_COLUMNS + ["path_a", "path_b"]
    # index_* are positions in create_dataset(...).images, path_* the files behind them
    for s in ("train", "val", "test"):
        data = create_dataset(f"folder:{path}", s)
        files = [str(f) for f in audit._plan_all(f"folder:{path}", [s], None)[s]]
        assert len(files) == len(data)
        for side in ("a", "b"):
            rows = result.pairs[result.pairs[f"split_{side}"] == s]
            for r in rows.itertuples():
                idx = getattr(r, f"index_{side}")
                assert files[idx] == getattr(r, f"path_{side}")
                assert data.class_names[data.labels[idx]] == getattr(r, f"class_{side}")
    exact = result.pairs[result.pairs["exact"]].iloc[0]
    a = create_dataset(f"folder:{path}", exact.split_a).images[exact.index_a]
    b = create_dataset(f"folder:{path}", exact.split_b).images[exact.index_b]
    assert np.array_equal(a, b)


def test_groups_file_format_and_clusters(planted, result, tmp_path):
    path, _, _, clusters = planted
    out = audit.write_groups(result, tmp_path / "groups.csv")
    text = out.read_text()
    assert text.splitlines()[0] == "split,index,group,class,dataset,fingerprint,path"
    rows = list(csv.DictReader(io.StringIO(text)))
    name = f"folder:{path}"
    found: dict[str, set] = {"train": set(), "val": set(), "test": set()}
    by_group: dict[tuple, set] = {}
    for row in rows:
        assert row["dataset"] == name
        data = create_dataset(name, row["split"])
        assert row["fingerprint"] == data.fingerprint()
        idx = int(row["index"])
        assert 0 <= idx < len(data) and row["class"] == data.class_names[data.labels[idx]]
        assert row["group"].startswith("dup-")
        by_group.setdefault((row["split"], row["group"]), set()).add(
            "/".join(Path(row["path"]).parts[-2:]))
    for (split, _), members in by_group.items():
        found[split].add(frozenset(members))
    assert found == clusters
    assert len({g for _, g in by_group}) == len(by_group)  # group names unique in the file
    # sorted by split (train, val, test) then index; one row per image
    keys = [(("train", "val", "test").index(r["split"]), int(r["index"])) for r in rows]
    assert keys == sorted(set(keys))


def test_splits_option_audits_only_those(planted):
    path, _, expected, _ = planted
    res = audit_dataset(f"folder:{planted[0]}", splits="test,train")
    assert res.splits == ["train", "test"]
    assert _pairs(res) == {p for p in expected if p[0] != "across-splits"}
    assert set(res.groups["split"]) == {"train", "test"}


def test_emoji_vendors_are_not_near_duplicates_of_each_other():
    res = audit_dataset("emoji")
    vendor = {s: create_dataset("emoji", s).meta["vendor"] for s in res.splits}
    cross = sum(vendor[r.split_a][r.index_a] != vendor[r.split_b][r.index_b]
                for r in res.pairs.itertuples())
    assert cross <= 3, cross  # 1 when measured: Noto and Twemoji drawings hash apart
    assert res.exact_counts()["across-classes"] == 0  # the builder drops those


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------

def test_cli_writes_the_pairs_csv_and_groups(planted, tmp_path):
    path = planted[0]
    r = run_bench(tmp_path, "data", "audit", f"folder:{path}", "--no-progress",
                  "--groups-out", "g/groups.csv", "--examples", "1")
    assert r.exit_code == 0, explain(r)
    out = r.stdout
    assert "within-class    5 pairs, 1 exact" in out, out
    assert "across-classes  1 pair, 0 exact" in out and "across-splits   1 pair, 1 exact" in out
    assert "train: 3 duplicate groups of 7 images" in out
    assert "test: 1 duplicate group of 2 images" in out and "val:" not in out
    assert f"train #8 {planted[1]['train'][0]}/p0.png" in out  # folder examples name files
    written = list((tmp_path / "results").glob("audit-folder-*pics.csv"))  # the default
    assert len(written) == 1 and f"pairs: results/{written[0].name} (7 rows)" in out
    pairs = written[0].read_text().splitlines()
    assert pairs[0].split(",") == PAIR_COLUMNS + ["path_a", "path_b"] and len(pairs) == 8
    assert (tmp_path / "g" / "groups.csv").read_text().count("dup-") == 9
    assert "groups: g/groups.csv (9 images in 4 groups)" in out


def _bad(tmp_path, *args):
    r = run_bench(tmp_path, "data", "audit", *args)
    assert r.exit_code == 2, explain(r)
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_bad_input_is_one_paragraph_before_any_work(planted, tmp_path, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("hashed before the input was checked")

    monkeypatch.setattr(audit, "phash_images", no_work)
    folder = f"folder:{planted[0]}"
    (tmp_path / "a-file").write_text("x")
    msg = _bad(tmp_path, "nope")
    assert "Unknown data set 'nope'" in msg and "bench data audit emoji" in msg
    msg = _bad(tmp_path, "cifar-fs", "--data-root", str(tmp_path / "none"))
    assert "no such folder" in msg and "--data-root" in msg
    assert "no such folder" in _bad(tmp_path, f"folder:{tmp_path / 'none'}")
    msg = _bad(tmp_path, folder, "--csv", str(tmp_path / "a-file" / "pairs.csv"))
    assert "--csv" in msg and "is a file, not a folder" in msg
    assert "is a folder" in _bad(tmp_path, folder, "--groups-out", str(tmp_path))
    msg = _bad(tmp_path, folder, "--max-distance", "-1")
    assert "--max-distance must be a whole number of bits from 0 to 16, not -1" in msg
    assert "not 17" in _bad(tmp_path, folder, "--max-distance", "17")
    assert "unknown tset" in _bad(tmp_path, folder, "--splits", "train,tset")
    assert "different file names" in _bad(tmp_path, folder, "--csv", "x.csv",
                                          "--groups-out", "x.csv")
    assert not (tmp_path / "results").exists()


def test_a_missing_later_split_is_found_before_the_first_is_hashed(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "phash_images", lambda *a, **k: pytest.fail("hashed"))
    path = tmp_path / "pics"
    for c in ("a", "b"):
        (path / c).mkdir(parents=True)
        _shapes(np.random.default_rng(0)).save(path / c / "x.png")
    (path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["gone"]}))
    msg = _bad(tmp_path, f"folder:{path}")
    # the folder loader refuses a split file naming a class folder that does not exist
    assert "gone" in msg and "split file" in msg


def test_cli_failure_keeps_existing_outputs(planted, tmp_path):
    old = tmp_path / "pairs.csv"
    old.write_text("kept\n")
    _bad(tmp_path, f"folder:{planted[0]}", "--csv", str(old), "--max-distance", "99")
    assert old.read_text() == "kept\n"
    r = run_bench(tmp_path, "data", "audit", f"folder:{planted[0]}", "--no-progress",
                  "--csv", str(old))
    assert r.exit_code == 0, explain(r)
    assert old.read_text().startswith("kind,distance,exact,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pairs")] == []


def test_notebook_function_checks_its_input_too():
    with pytest.raises(BenchError, match="--max-distance must be"):
        audit_dataset("emoji", max_distance=-2)
    with pytest.raises(BenchError, match="--splits"):
        audit_dataset("emoji", splits="")


def test_cli_help_states_the_module_default(tmp_path):
    r = run_bench(tmp_path, "data", "audit", "--help")
    assert r.exit_code == 0 and f"[default: {audit.DEFAULT_MAX_DISTANCE}]" in r.stdout


def test_speed_benchmark_runs_and_finds_its_planted_copies():
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "audit_speed.py"
    proc = subprocess.run([sys.executable, str(script), "--n", "2000", "--compare"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2,000 images:" in proc.stdout and "find_pairs brute" in proc.stdout
