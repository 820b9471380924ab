"""Video clip throughput: PyAV decoding of MP4 files (and the sprites generator), in clips/s.

Writes sprites videos as H.264 MP4 files (``openjepa data sprites``' writer) to a temporary folder, then
reads random training clips through :class:`openjepa.data.video.VideoFileDataset` in a ``DataLoader``
with 0 and 2 worker processes, the way training does. Two settings:

- ``paper``: clips of 16 frames, step 4 (V-JEPA / SALT), from 224 px videos of ``--paper-length`` frames;
- ``demo``: clips of 16 frames, step 2, from 64 px videos of 32 frames (``configs/vjepa/demo.yaml``).

For each it reports decoded clips/s, clips/s with the training crop (``VideoRandomResizedCrop`` to the
video's size) added, and, for reference, clips/s of generating the same sprites clips on the fly: the
best of ``--repeats`` runs (other processes only ever slow a run down) and the median. One JSON object per
line, with the load average before and after. Decoding runs one FFmpeg thread per process (the reader's
default in loader workers).

Example:
    python benchmarks/video_decode.py --clips 96 --workers 0 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from openjepa.data.export import export_sprites
from openjepa.data.sprites import SpritesDataset
from openjepa.data.video import VideoFileDataset
from openjepa.data.video_transforms import VideoRandomResizedCrop

SETTINGS = {
    # name: (image_size, video length, num_frames, frame_step)
    "paper": (224, None, 16, 4),
    "demo": (64, 32, 16, 2),
}


class ClipReader(Dataset):
    """Item ``k`` = a training clip of video ``k % len(videos)`` with a generator seeded by ``k``."""

    def __init__(self, videos: Any, count: int, crop: VideoRandomResizedCrop | None):
        self.videos, self.count, self.crop = videos, count, crop

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> torch.Tensor:
        rng = np.random.default_rng(k)
        clip = self.videos.clip(k % len(self.videos), rng)["video"]
        return self.crop(clip, rng) if self.crop is not None else torch.from_numpy(clip)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one core per worker: the workers are the parallelism


def clips_per_second(dataset: Dataset, workers: int, batch_size: int) -> float:
    """Clips/s of iterating ``dataset`` once through a DataLoader (after the workers have started)."""
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, worker_init_fn=_worker_init if workers else None
    )
    iterator = iter(loader)
    first = next(iterator)  # worker start-up and first-batch latency are not throughput
    start = time.perf_counter()
    seen = 0
    for batch in iterator:
        seen += batch.shape[0]
    elapsed = time.perf_counter() - start
    return (seen / elapsed) if seen else first.shape[0] / elapsed


def run_setting(name: str, args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    size, length, num_frames, frame_step = SETTINGS[name]
    length = length or args.paper_length
    out = folder / name
    start = time.perf_counter()
    export_sprites(out, split="val", count=args.videos, image_size=size, length=length, overwrite=True, progress=False)
    encode_s = time.perf_counter() - start
    videos = VideoFileDataset(out / "list.txt", num_frames=num_frames, frame_step=frame_step)
    generated = SpritesDataset("val", args.videos, size, length, num_frames=num_frames, frame_step=frame_step)
    crop = VideoRandomResizedCrop(size, hflip=True)
    common = {
        "setting": name,
        "image_size": size,
        "video_frames": length,
        "num_frames": num_frames,
        "frame_step": frame_step,
        "mp4_kib": round(sum(p.stat().st_size for p in (out / "videos").iterdir()) / args.videos / 1024, 1),
        "encode_s_per_video": round(encode_s / args.videos, 3),
    }
    rows = []
    for workers in args.workers:
        for what, source, transform in (
            ("decode", videos, None),
            ("decode+crop", videos, crop),
            ("generate", generated, None),
        ):
            reader = ClipReader(source, args.clips, transform)
            rates = sorted(clips_per_second(reader, workers, args.batch_size) for _ in range(args.repeats))
            rows.append(
                {
                    **common,
                    "what": what,
                    "workers": workers,
                    "clips_per_s": round(rates[-1], 1),  # the best run: other jobs only ever slow it down
                    "clips_per_s_median": round(rates[len(rates) // 2], 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["demo", "paper"])
    parser.add_argument("--videos", type=int, default=8, help="MP4 files written per setting")
    parser.add_argument("--paper-length", type=int, default=128, help="frames per video in the paper setting")
    parser.add_argument("--clips", type=int, default=64, help="clips read per measurement")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best and median reported)")
    parser.add_argument("--dir", help="where to write the videos (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps({"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir) if args.dir else Path(tmp)
        for name in args.settings:
            run_setting(name, args, folder)
    print(json.dumps({"load_avg_1min_after": round(os.getloadavg()[0], 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
