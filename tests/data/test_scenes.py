"""The scenes generator: determinism, labels, segmentation, captions and caption noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openjepa.config import ConfigError
from openjepa.data.scenes import (
    BOUND,
    COLORS,
    SEG_CLASSES,
    SHAPE_WORDS,
    SHAPES,
    SIZE_RANGES,
    ScenesDataset,
    coarse_location,
    patch_labels,
    shape_mask,
)


def _fingerprint(item: dict) -> tuple:
    labels = tuple(item["labels"].items())
    return (item["image"].tobytes(), item["seg"].tobytes(), tuple(item["captions"]), labels)


def test_same_seed_split_index_gives_identical_items():
    a = ScenesDataset("train", size=20, seed=3)
    b = ScenesDataset("train", size=20, seed=3)
    for i in (0, 7, 19):
        assert _fingerprint(a[i]) == _fingerprint(b[i])
    # Order of access does not matter: items are pure functions of the index.
    assert _fingerprint(a[7]) == _fingerprint(ScenesDataset("train", size=20, seed=3)[7])
    assert _fingerprint(a[-1]) == _fingerprint(a[19])


def test_splits_and_seeds_give_different_scenes():
    train = ScenesDataset("train", size=50)
    others = [ScenesDataset("val", 50), ScenesDataset("test", 50), ScenesDataset("train", 50, seed=1)]
    train_scenes = {train.scene(i).objects for i in range(50)}
    for ds in others:
        assert all(ds.scene(i).objects not in train_scenes for i in range(50))
        assert all(ds[i]["image"].tobytes() != train[i]["image"].tobytes() for i in range(5))


def test_item_contents_and_sizes():
    for size in (32, 64, 224):
        item = ScenesDataset(size=3, image_size=size)[0]
        assert set(item) == {"image", "captions", "labels", "seg", "index"}
        assert item["image"].mode == "RGB" and item["image"].size == (size, size)
        assert item["seg"].shape == (size, size) and item["seg"].dtype == np.uint8
        assert item["index"] == 0
    with pytest.raises(IndexError):
        ScenesDataset(size=3)[3]


@pytest.mark.parametrize("bad", [16, 31, 225, 512])
def test_image_size_out_of_range_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=str(bad)):
        ScenesDataset(image_size=bad)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="holdout"):
        ScenesDataset(split="holdout")
    with pytest.raises(ConfigError, match="max_objects"):
        ScenesDataset(max_objects=0)
    with pytest.raises(ConfigError, match="caption_noise"):
        ScenesDataset(caption_noise=1.5)


def test_tasks_and_label_ranges():
    ds = ScenesDataset(size=300, max_objects=4)
    assert ds.tasks == {
        "count": 4,
        "largest_shape": 6,
        "largest_color": 8,
        "smallest_color": 8,
        "leftmost_shape": 6,
    }
    seen = {task: set() for task in ds.tasks}
    for i in range(len(ds)):
        labels = ds.scene(i).labels()
        assert list(labels) == list(ds.tasks)
        for task, value in labels.items():
            assert 0 <= value < ds.tasks[task]
            seen[task].add(value)
    # Every class of every task occurs in a few hundred scenes: the label spaces are really used.
    assert all(len(seen[task]) == n for task, n in ds.tasks.items())


def test_labels_match_the_objects():
    ds = ScenesDataset(size=200, image_size=64)
    for i in range(len(ds)):
        scene = ds.scene(i)
        objs = scene.objects
        labels = ds[i]["labels"] if i < 20 else scene.labels()
        assert 1 <= len(objs) <= 4
        assert labels["count"] == len(objs) - 1
        order = range(len(objs))
        largest = objs[sorted(order, key=lambda k: (-objs[k].radius, k))[0]]
        smallest = objs[sorted(order, key=lambda k: (objs[k].radius, k))[0]]
        leftmost = objs[sorted(order, key=lambda k: (objs[k].x, k))[0]]
        assert labels["largest_shape"] == SHAPES.index(largest.shape)
        assert labels["largest_color"] == COLORS.index(largest.color)
        assert labels["smallest_color"] == COLORS.index(smallest.color)
        assert labels["leftmost_shape"] == SHAPES.index(leftmost.shape)


def test_objects_sizes_positions_and_overlap():
    size = 64
    ds = ScenesDataset(size=200, image_size=size)
    for i in range(len(ds)):
        objs = ds.scene(i).objects
        for o in objs:
            lo, hi = SIZE_RANGES[o.size]
            assert lo * size <= o.radius <= hi * size
            assert o.reach <= o.x <= size - o.reach and o.reach <= o.y <= size - o.reach  # fully inside
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                gap = math.hypot(objs[a].x - objs[b].x, objs[a].y - objs[b].y)
                assert gap >= 0.8 * (objs[a].reach + objs[b].reach) - 1e-9


def test_seg_map_marks_every_object():
    ds = ScenesDataset(size=100, image_size=64)
    for i in range(len(ds)):
        item, scene = ds[i], ds.scene(i)
        seg = item["seg"]
        assert seg.max() < SEG_CLASSES and (seg == 0).any() and (seg > 0).any()
        assert set(np.unique(seg)) - {0} <= {o.shape_id + 1 for o in scene.objects}
        for o in scene.objects:
            # Placement keeps later objects off earlier centres, so the centre pixel shows the object.
            assert seg[int(o.y), int(o.x)] == o.shape_id + 1


def test_every_shape_has_the_area_of_its_radius():
    # Same equal-area radius, same area, whatever the shape: "largest" compares like with like.
    step = 0.005
    grid = np.arange(-2.0, 2.0, step) + step / 2
    for shape in SHAPES:
        inside = shape_mask(shape, grid[None, :], grid[:, None], 1.0)
        assert inside.sum() * step**2 == pytest.approx(math.pi, rel=0.005), shape
        assert np.hypot(*np.meshgrid(grid, grid))[inside].max() <= BOUND[shape] + step


def test_seg_area_follows_the_radius():
    ds = ScenesDataset(size=200, image_size=128, max_objects=1)
    for i in range(len(ds)):
        (obj,) = ds.scene(i).objects
        area = (ds[i]["seg"] > 0).sum()
        assert area == pytest.approx(obj.area, rel=0.15), obj


def test_object_pixels_have_the_object_colour():
    from openjepa.data.scenes import COLOR_RGB

    ds = ScenesDataset(size=60, image_size=64)
    for i in range(len(ds)):
        scene, item = ds.scene(i), ds[i]
        pixels = np.asarray(item["image"], dtype=np.float32)
        for o in scene.objects:
            if o.texture == "solid":
                centre = pixels[int(o.y), int(o.x)]
                assert np.abs(centre - COLOR_RGB[o.color]).max() <= 8  # noise is at most 7


def test_patch_labels_shape_and_rule():
    seg = np.zeros((16, 16), dtype=np.uint8)
    seg[0:4, 0:4] = 3  # 16 of 64 pixels = 25% of patch (0, 0): labelled
    seg[8:11, 8:11] = 5  # 9 of 64 pixels: too little, background
    seg[0:8, 8:11] = 2  # 24 pixels of class 2 ...
    seg[0:8, 11:14] = 6  # ... vs 24 of class 6: the tie goes to the lower shape id
    out = patch_labels(seg, 8)
    assert out.shape == (2, 2) and out.dtype == np.int64
    assert out.tolist() == [[3, 2], [0, 0]]
    assert patch_labels(seg, 8, min_fraction=0.1).tolist() == [[3, 2], [0, 5]]
    batch = patch_labels(np.stack([seg, np.zeros_like(seg)]), 4)
    assert batch.shape == (2, 4, 4) and batch[1].max() == 0
    with pytest.raises(ValueError, match="patch_size=5"):
        patch_labels(seg, 5)


def test_patch_labels_of_real_scenes():
    ds = ScenesDataset(size=50, image_size=64)
    for i in range(len(ds)):
        item = ds[i]
        grid = patch_labels(item["seg"], 8)
        assert grid.shape == (8, 8)
        assert set(np.unique(grid)) <= set(np.unique(item["seg"]))
        assert (grid > 0).any()  # every scene has at least one object big enough to label a patch


def _shape_words(caption: str) -> set[str]:
    return {shape for shape, words in SHAPE_WORDS.items() if any(w in caption for w in words)}


def test_captions_describe_the_true_objects():
    ds = ScenesDataset(size=100, image_size=64)
    numbers = ("one", "two", "three", "four")
    for i in range(len(ds)):
        scene, captions = ds.scene(i), ds[i]["captions"]
        text = " | ".join(captions)
        assert len(captions) >= 8 and all(isinstance(c, str) and c for c in captions)
        for o in scene.objects:
            assert any(o.color in c and o.shape in _shape_words(c) for c in captions), (o, captions)
        colours = {o.color for o in scene.objects}
        assert all(c not in text.split() for c in set(COLORS) - colours)
        assert all(set(_shape_words(c)) <= {o.shape for o in scene.objects} for c in captions)
        n = len(scene.objects)
        assert any(numbers[n - 1] in c.split() for c in captions) or (n == 1 and "single" in text)


def test_captions_give_coarse_locations():
    ds = ScenesDataset(size=120, image_size=64, max_objects=1)
    for i in range(len(ds)):
        (obj,) = ds.scene(i).objects
        text = " ".join(ds.captions(i))
        row, col = coarse_location(obj, 64)
        if col == 0:
            assert "left" in text
        if col == 2:
            assert "right" in text
        if row == 0:
            assert "top" in text or "upper" in text
        if row == 2:
            assert "bottom" in text or "lower" in text
        if (row, col) == (1, 1):
            assert "center" in text or "middle" in text


def test_caption_relations_are_true():
    ds = ScenesDataset(size=100, image_size=64, max_objects=2)
    checked = 0
    for i in range(len(ds)):
        objs = ds.scene(i).objects
        if len(objs) != 2 or objs[0].color == objs[1].color:
            continue
        by_colour = {o.color: o for o in objs}
        for c in ds.captions(i):
            for rel, test in (
                (" is left of ", lambda a, b: a.x < b.x),
                (" is to the left of ", lambda a, b: a.x < b.x),
                (" is right of ", lambda a, b: a.x > b.x),
                (" is above ", lambda a, b: a.y < b.y),
                (" is below ", lambda a, b: a.y > b.y),
            ):
                if rel in c:
                    left, right = c.split(rel)
                    a = next(o for col, o in by_colour.items() if col in left.split())
                    b = next(o for col, o in by_colour.items() if col in right.split())
                    assert test(a, b), c
                    checked += 1
    assert checked > 10


def test_caption_noise_changes_words_not_images():
    clean = ScenesDataset(size=30, image_size=64, caption_noise=0.0)
    noisy = ScenesDataset(size=30, image_size=64, caption_noise=1.0)
    wrong_colour = False
    for i in range(len(clean)):
        a, b = clean[i], noisy[i]
        assert a["image"].tobytes() == b["image"].tobytes() and a["labels"] == b["labels"]
        assert len(a["captions"]) == len(b["captions"])
        # Noise 1.0: every caption carries a wrong attribute, so none is left as it was.
        assert all(x != y for x, y in zip(a["captions"], b["captions"], strict=True))
        colours = {o.color for o in clean.scene(i).objects}
        wrong_colour |= any(w in set(COLORS) - colours for c in b["captions"] for w in c.split())
    assert wrong_colour


def test_partial_caption_noise_rate():
    ds_clean = ScenesDataset(size=100, caption_noise=0.0)
    ds_noisy = ScenesDataset(size=100, caption_noise=0.3)
    pairs = [
        pair for i in range(100) for pair in zip(ds_clean.captions(i), ds_noisy.captions(i), strict=True)
    ]
    rate = np.mean([x != y for x, y in pairs])
    assert 0.2 < rate < 0.4
