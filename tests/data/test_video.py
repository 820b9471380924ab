"""Video reading: clip sampling, PyAV decoding of generated MP4 files, the list / CSV / JSONL / folder
layouts, corrupt and missing files (skipped and counted through SkipCorrupt), and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from openjepa.config import ConfigError
from openjepa.data.images import SkipCorrupt
from openjepa.data.video import (
    ClipDoesNotFitError,
    CorruptVideoError,
    VideoFileDataset,
    VideoTooShortError,
    clip_span,
    count_frames,
    eval_clip_indices,
    probe_video,
    read_frames,
    train_clip_indices,
    write_video,
)
from openjepa.errors import CorruptFileError, DataError

pytest.importorskip("av")

SIDE = 32
# Frame t of a test video is a flat grey of level 20 + 10 t (and a coloured corner that tells the video
# apart): flat frames survive H.264 within a couple of levels, so the level says which frame was decoded.
LEVEL0, LEVEL_STEP = 20, 10


def make_frames(num: int, tag: int = 0, side: int = SIDE) -> np.ndarray:
    frames = np.empty((num, side, side, 3), dtype=np.uint8)
    for t in range(num):
        frames[t] = LEVEL0 + LEVEL_STEP * t
    frames[:, :8, :8] = (250, 40 + 20 * tag, 40)
    return frames


def frame_ids(video: np.ndarray) -> np.ndarray:
    """Which frame each decoded frame is, from its mean level away from the tagged corner."""
    levels = video[..., 8:, 8:, :].reshape(*video.shape[:-3], -1).mean(-1)
    return np.rint((levels - LEVEL0) / LEVEL_STEP).astype(int)


def write_test_video(path: Path, num: int = 20, tag: int = 0, fps: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, make_frames(num, tag), fps=fps, crf=10, preset="ultrafast")


# ----------------------------------------------------------------------------- clip sampling


def test_clip_span():
    assert clip_span(16, 4) == 61
    assert clip_span(1, 7) == 1
    with pytest.raises(ConfigError, match="data.num_frames"):
        clip_span(0, 2)
    with pytest.raises(ConfigError, match="data.frame_step"):
        clip_span(4, 0)


def test_train_clip_indices_cover_every_start_uniformly():
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(4000):
        idx = train_clip_indices(20, 4, 3, rng)  # span 10: starts 0..10
        assert np.array_equal(np.diff(idx), [3, 3, 3])
        assert idx[0] >= 0 and idx[-1] < 20
        starts.append(idx[0])
    counts = np.bincount(starts, minlength=11)
    assert len(counts) == 11 and counts.min() > 4000 / 11 * 0.8  # every start, roughly equally often
    a = train_clip_indices(50, 8, 2, np.random.default_rng(7))
    b = train_clip_indices(50, 8, 2, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_exact_fit_and_short_video_policies():
    assert np.array_equal(train_clip_indices(7, 4, 2, np.random.default_rng(0)), [0, 2, 4, 6])
    # pad: from frame 0, the last frame repeated; nothing random.
    assert np.array_equal(train_clip_indices(5, 4, 2, np.random.default_rng(0)), [0, 2, 4, 4])
    looped = train_clip_indices(5, 4, 2, np.random.default_rng(3), short="loop")
    start = looped[0]
    assert np.array_equal(looped, (start + np.arange(4) * 2) % 5)
    loop_starts = {train_clip_indices(5, 4, 2, np.random.default_rng(s), short="loop")[0] for s in range(60)}
    assert loop_starts == set(range(5))
    with pytest.raises(ClipDoesNotFitError, match=r"data.num_frames=4 x data.frame_step=2 \(7 frames\)"):
        train_clip_indices(5, 4, 2, np.random.default_rng(0), short="error")
    with pytest.raises(ValueError, match="short='wrap'"):
        train_clip_indices(5, 4, 2, np.random.default_rng(0), short="wrap")
    with pytest.raises(ValueError, match="at least one frame"):
        train_clip_indices(0, 4, 2, np.random.default_rng(0))


def test_eval_clip_indices_are_evenly_spaced_and_centred():
    one = eval_clip_indices(40, 4, 3, 1)  # span 10, starts 0..30: the centre one is 15
    assert one.shape == (1, 4) and one[0, 0] == 15
    assert one[0, 0] == 40 - 1 - one[0, -1]  # as far from the end as from the start
    three = eval_clip_indices(40, 4, 3, 3)
    assert three[:, 0].tolist() == [5, 15, 25]  # middles of three equal segments of the starts
    assert np.all(np.diff(three, axis=1) == 3) and three.max() < 40
    assert np.array_equal(eval_clip_indices(40, 4, 3, 3), three)
    assert eval_clip_indices(10, 4, 3, 2)[:, 0].tolist() == [0, 0]  # exact fit: every clip is the video
    padded = eval_clip_indices(5, 4, 2, 2)
    assert padded.tolist() == [[0, 2, 4, 4], [0, 2, 4, 4]]
    looped = eval_clip_indices(6, 4, 2, 2, short="loop")
    assert looped.tolist() == [[0, 2, 4, 0], [3, 5, 1, 3]]
    with pytest.raises(ClipDoesNotFitError):
        eval_clip_indices(5, 4, 2, 1, short="error")
    with pytest.raises(ValueError, match="num_clips"):
        eval_clip_indices(50, 4, 2, 0)


# ----------------------------------------------------------------------------- decoding


def test_write_and_read_frames_round_trip(tmp_path):
    path = write_test_video(tmp_path / "a.mp4", num=20)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (20, SIDE, SIDE, 8.0)
    video = read_frames(path)
    assert video.shape == (20, SIDE, SIDE, 3) and video.dtype == np.uint8
    assert np.abs(video.astype(int) - make_frames(20).astype(int)).mean() < 3
    assert frame_ids(video).tolist() == list(range(20))
    picked = read_frames(path, [7, 2, 2, 19, 0])  # any order, repeats
    assert frame_ids(picked).tolist() == [7, 2, 2, 19, 0]
    with pytest.raises(ValueError, match=">= 0"):
        read_frames(path, [-1])


def test_frame_count_without_header_count(tmp_path):
    # Matroska stores no frame count: the reader counts packets instead.
    path = write_test_video(tmp_path / "a.mkv", num=13)
    assert count_frames(path) == 13
    assert frame_ids(read_frames(path, [12])).tolist() == [12]


def test_truncated_and_non_video_files_are_corrupt(tmp_path):
    good = write_test_video(tmp_path / "good.mp4", num=20)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: the file cannot be opened
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for bad in (cut, text, empty):
        with pytest.raises(CorruptVideoError) as info:
            read_frames(bad, [0])
        assert info.value.path == str(bad) and isinstance(info.value, CorruptFileError)
        assert f"cannot decode video {bad}" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_frames(tmp_path / "missing.mp4", [0])


def test_header_longer_than_the_frames_is_a_truncated_file(tmp_path):
    import av

    # Index at the front (faststart) and the data cut: the header still promises 40 frames.
    path = tmp_path / "front.mp4"
    frames = np.random.default_rng(0).integers(0, 256, (40, SIDE, SIDE, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=8, options={"crf": "20", "preset": "ultrafast"})
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 5])
    assert count_frames(path) == 40
    read_frames(path, [0])  # the start is still there
    with pytest.raises(CorruptVideoError, match="decod|truncated"):
        read_frames(path, [39])


# ----------------------------------------------------------------------------- layouts


@pytest.fixture
def videos(tmp_path) -> Path:
    """Five videos: a/ holds 20 and 12 frames, b/ 20, 16 and 9 frames."""
    root = tmp_path / "videos"
    for k, (cls, num) in enumerate([("a", 20), ("a", 12), ("b", 20), ("b", 16), ("b", 9)]):
        write_test_video(root / cls / f"v{k}.mp4", num=num, tag=k)
    return root


def test_list_file_space_and_comma_separated(videos, tmp_path):
    space = tmp_path / "train.txt"
    space.write_text(
        "# a comment line\n"
        f"videos/a/v0.mp4 3\nvideos/a/v1.mp4 0\n\n{videos / 'b' / 'v2.mp4'} 3\n"  # relative and absolute
    )
    ds = VideoFileDataset(space, num_frames=4, frame_step=2)
    assert ds.layout == "list" and len(ds) == 3
    assert ds.tasks == {"class": 4} and ds.classes == {"class": []}
    assert [ds[i]["labels"] for i in range(3)] == [{"class": 3}, {"class": 0}, {"class": 3}]
    assert ds.line_numbers == [2, 3, 5]
    comma = tmp_path / "named.csv"  # a V-JEPA "csv" list has no header
    comma.write_text("videos/b/v3.mp4,walk\nvideos/a/v0.mp4,run\nvideos/b/v4.mp4,walk\n")
    named = VideoFileDataset(comma, num_frames=4, frame_step=2)
    assert named.layout == "list" and named.classes == {"class": ["run", "walk"]}
    assert [named[i]["labels"]["class"] for i in range(3)] == [1, 0, 1]
    bare = tmp_path / "bare.txt"
    bare.write_text("videos/a/v0.mp4\nvideos/a/v1.mp4\n")
    unlabelled = VideoFileDataset(bare, num_frames=4, frame_step=2)
    assert unlabelled.tasks == {} and unlabelled[1]["labels"] == {} and "captions" not in unlabelled[1]


def test_list_path_with_spaces(tmp_path):
    write_test_video(tmp_path / "my clips" / "a b.mp4", num=10)
    lst = tmp_path / "list.txt"
    lst.write_text("my clips/a b.mp4 2\nmy clips/a b.mp4\n")
    with pytest.raises(ValueError, match=r"line 2: no label, but line 1 has a label"):
        VideoFileDataset(lst, num_frames=2, frame_step=2)
    lst.write_text("my clips/a b.mp4 2\n")
    assert VideoFileDataset(lst, num_frames=2, frame_step=2).files == [tmp_path / "my clips" / "a b.mp4"]
    lst.write_text("my clips/a b.mp4\n")  # no label: the last word is a video file name
    assert VideoFileDataset(lst, num_frames=2, frame_step=2).tasks == {}


def test_csv_with_header_and_captions(videos, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text(
        "video,label,captions,duration\n"
        'videos/a/v0.mp4,run,"[""a person runs"", ""outdoors""]",3.2\n'
        "videos/b/v2.mp4,walk,someone walks,1.0\n"
        "videos/b/v3.mp4,walk,,2.0\n"
    )
    ds = VideoFileDataset(table, num_frames=4, frame_step=2)
    assert ds.layout == "csv" and ds.tasks == {"class": 2}
    item = ds[0]
    assert item["captions"] == ["a person runs", "outdoors"] and item["labels"] == {"class": 0}
    assert ds[1]["captions"] == ["someone walks"] and ds[2]["captions"] == []
    tsv = tmp_path / "table.tsv"
    tsv.write_text("path\tlabel\nvideos/a/v1.mp4\t4\n")
    assert VideoFileDataset(tsv, num_frames=4, frame_step=2)[0]["labels"] == {"class": 4}
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nvideos/a/v0.mp4,1\nvideos/a/v1.mp4\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: 1 fields, the header has 2"):
        VideoFileDataset(bad, num_frames=4, frame_step=2)


def test_jsonl_with_several_tasks(videos, tmp_path):
    lines = [
        {"video": "videos/a/v0.mp4", "labels": {"action": "run", "scene": 1}, "captions": ["fast"]},
        {"video": "videos/b/v2.mp4", "labels": {"action": "walk", "scene": 0}, "caption": "slow"},
    ]
    path = tmp_path / "clips.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    ds = VideoFileDataset(path, num_frames=4, frame_step=2)
    assert ds.tasks == {"action": 2, "scene": 2} and ds.classes == {"action": ["run", "walk"], "scene": []}
    assert ds[1]["labels"] == {"action": 1, "scene": 0} and ds[1]["captions"] == ["slow"]


def test_folder_with_class_subfolders_and_flat(videos, tmp_path):
    ds = VideoFileDataset(videos, num_frames=4, frame_step=2)
    assert ds.layout == "folder" and ds.classes == {"class": ["a", "b"]} and ds.tasks == {"class": 2}
    assert [p.name for p in ds.files] == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4", "v4.mp4"]
    assert [ds[i]["labels"]["class"] for i in range(5)] == [0, 0, 1, 1, 1]
    flat = VideoFileDataset(videos / "b", num_frames=4, frame_step=2)
    assert len(flat) == 3 and flat.tasks == {} and flat[0]["path"] == str(videos / "b" / "v2.mp4")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos found"):
        VideoFileDataset(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="video source not found"):
        VideoFileDataset(tmp_path / "absent.txt")


def test_malformed_lines_name_file_and_line(videos, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("videos/a/v0.mp4 1\nvideos/a/v1.mp4 -2\nvideos/b/v2.mp4 0\n")
    with pytest.raises(ValueError, match=r"list.txt, line 2: label -2 is negative.*strict=False"):
        VideoFileDataset(lst)
    with pytest.warns(UserWarning, match="skipped 1 malformed line"):
        ds = VideoFileDataset(lst, num_frames=4, frame_step=2, strict=False)
    assert len(ds) == 2
    assert ds.skipped_lines == [f"{lst}:2: label -2 is negative; labels are class indices >= 0 or class names"]
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"video": "videos/a/v0.mp4"}\n{"label": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: missing \"video\""):
        VideoFileDataset(jl)


def test_missing_files_are_named_or_deferred(videos, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("videos/a/v0.mp4 0\nvideos/a/gone.mp4 1\nvideos/b/v2.mp4 1\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 listed videos are missing, e.g. .*gone.mp4 \(line 2\)"):
        VideoFileDataset(lst)
    ds = SkipCorrupt(VideoFileDataset(lst, num_frames=4, frame_step=2, check_files=False))
    item = ds.clip(1, np.random.default_rng(0))
    assert item["index"] == 2 and len(item["skipped"]) == 1 and "gone.mp4" in item["skipped"][0]


# ----------------------------------------------------------------------------- the protocol


def test_clip_eval_clips_and_getitem(videos):
    ds = VideoFileDataset(videos, num_frames=4, frame_step=3)  # span 10
    clip = ds.clip(0, np.random.default_rng(5))
    assert set(clip) == {"video", "labels", "index", "path"}
    assert clip["video"].shape == (4, SIDE, SIDE, 3) and clip["video"].dtype == np.uint8
    ids = frame_ids(clip["video"])
    assert np.all(np.diff(ids) == 3) and 0 <= ids[0] <= 10  # 20 frames: starts 0..10
    again = ds.clip(0, np.random.default_rng(5))
    assert np.array_equal(again["video"], clip["video"])
    starts = {frame_ids(ds.clip(0, np.random.default_rng(s))["video"])[0] for s in range(40)}
    assert len(starts) >= 6  # the start is random
    multi = ds.eval_clips(2, 3)  # 20 frames, room 10: starts 1, 5, 8
    assert multi["video"].shape == (3, 4, SIDE, SIDE, 3)
    assert frame_ids(multi["video"]).tolist() == [[1, 4, 7, 10], [5, 8, 11, 14], [8, 11, 14, 17]]
    assert multi["labels"] == {"class": 1} and multi["index"] == 2
    single = ds[2]
    assert single["video"].shape == (4, SIDE, SIDE, 3)
    assert frame_ids(single["video"]).tolist() == [5, 8, 11, 14]  # the central clip
    short = ds[4]  # 9 frames < span 10: padded with the last frame
    assert frame_ids(short["video"]).tolist() == [0, 3, 6, 8]
    assert ds.num_video_frames(4) == 9


def test_short_videos_with_the_error_policy_are_skipped_then_reported(videos):
    ds = VideoFileDataset(videos, num_frames=4, frame_step=4, short="error")  # span 13
    with pytest.raises(VideoTooShortError, match=r"12 frames, shorter than one clip of data.num_frames=4"):
        ds.clip(1, np.random.default_rng(0))
    item = SkipCorrupt(ds).clip(1, np.random.default_rng(0))
    assert item["index"] == 2 and "v1.mp4: 12 frames" in item["skipped"][0]
    ds.check_clips_fit()  # some videos are long enough
    never = VideoFileDataset(videos, num_frames=8, frame_step=4, short="error")  # span 29 > 20
    with pytest.raises(ConfigError, match=r"spans 29 frames, but the longest of 5 sampled videos has 20.*frame_step"):
        never.check_clips_fit()
    with pytest.raises(DataError, match="consecutive files"):
        SkipCorrupt(never, max_tries=3).clip(0, np.random.default_rng(0))


def test_skip_corrupt_skips_truncated_and_non_video_files(tmp_path):
    write_test_video(tmp_path / "ok0.mp4", num=12, tag=0)
    data = write_test_video(tmp_path / "cut.mp4", num=12, tag=1).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 10)
    write_test_video(tmp_path / "ok1.mp4", num=12, tag=2)
    lst = tmp_path / "list.txt"
    lst.write_text("ok0.mp4 0\ncut.mp4 1\ntext.mp4 1\nok1.mp4 0\n")
    ds = SkipCorrupt(VideoFileDataset(lst, num_frames=4, frame_step=2))
    rng = np.random.default_rng(0)
    items = [ds.clip(i, rng) for i in range(len(ds))]
    assert [it["index"] for it in items] == [0, 3, 3, 3]
    skipped = [s for it in items for s in it["skipped"]]
    assert len(skipped) == 3  # item 1 skips cut.mp4 and text.mp4, item 2 skips text.mp4
    assert sum("cut.mp4" in s for s in skipped) == 1 and sum("text.mp4" in s for s in skipped) == 2
    eval_item = ds[1]
    assert eval_item["index"] == 3 and eval_item["video"].shape == (4, SIDE, SIDE, 3)


def test_bad_clip_shape_names_the_key(videos):
    with pytest.raises(ConfigError, match="data.num_frames=0"):
        VideoFileDataset(videos, num_frames=0)
    with pytest.raises(ValueError, match="short='cut'"):
        VideoFileDataset(videos, short="cut")
