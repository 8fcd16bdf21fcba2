"""Data benchmarks: synthetic generator and reader throughput (prints a table).

Run: ``.venv/bin/python -m benchmarks.bench_data [--frames 90]``. Reports wall-clock frames/s and CPU
seconds per frame (process time, all threads) so that numbers taken on a shared machine can be judged.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _measure(fn, n):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return n / wall, cpu / n * 1000


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=90)
    args = p.parse_args(argv)
    n = args.frames


    from m2hmx.data.readers.scannet import ScanNetExport
    from m2hmx.data.synthetic import SyntheticSource, write_scene
    from m2hmx.data.torch_datasets import FrameDataset

    rows = []
    src = SyntheticSource(seed=1, frames=n, height=240, width=320)
    src[0]  # build the ray-casting scene outside the timing
    rows.append(("synthetic render (all GT, in memory)", "240x320", *_measure(lambda: [src[i] for i in range(n)], n)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scene"
        rows.append(("synthetic render + write (ScanNet layout)", "240x320",
                     *_measure(lambda: write_scene(out, seed=1, frames=n, progress=False), n)))
        exp = ScanNetExport(out)
        rows.append(("ScanNet export reader (jpg, depth, label, normal)", "240x320",
                     *_measure(lambda: [exp[i] for i in range(n)], n)))
        ds = FrameDataset(exp, size=(240, 320), augment=True)
        rows.append(("FrameDataset, first epoch (decode + augment)", "240x320", *_measure(lambda: [ds[i] for i in range(n)], n)))
        rows.append(("FrameDataset, cached epoch (augment only)", "240x320", *_measure(lambda: [ds[i] for i in range(n)], n)))
    if SHARED.is_dir():
        from m2hmx.data.readers.sens import SensFile
        from m2hmx.data.readers.sevenscenes import SevenScenes

        sens = SensFile(SHARED / "sens-sample" / "redkitchen_frames000-019.sens")
        rows.append((".sens reader (jpeg + zlib depth)", "480x640", *_measure(lambda: [sens[i] for i in range(len(sens))], len(sens))))
        seven = SevenScenes(SHARED / "7scenes-redkitchen")
        k = min(n, len(seven))
        rows.append(("7-Scenes reader (jpg + png)", "480x640", *_measure(lambda: [seven[i] for i in range(k)], k)))
    print(f"{'what':52s} {'size':>8s} {'frames/s':>9s} {'CPU ms/frame':>13s}")
    for name, size, fps, cpu in rows:
        print(f"{name:52s} {size:>8s} {fps:9.1f} {cpu:13.1f}")
    print(f"({n} frames each; wall-clock rate on this machine as loaded now; CPU ms counts all threads)")


if __name__ == "__main__":
    main()
