"""Mapping throughput on generated scenes: per-frame tracking and integration, and map extraction.

Run: ``.venv/bin/python -m benchmarks.bench_mapping [--frames N]``. Frames are rendered before timing.
"tracking" = frame-to-model odometry + the ray-cast for the next frame (+ scale alignment in pred mode);
"integration" = TSDF + class-evidence update; "extraction" = mesh (with class colours) and scene graph.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingBridge, MappingConfig
from mapping.interface import PerceptionFrame


def bench(height: int, width: int, frames: int, depth_mode: str = "sensor") -> dict:
    source = SyntheticSource(seed=0, frames=frames, height=height, width=width)
    rendered = list(source)
    rng = np.random.default_rng(0)
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode=depth_mode))
    inputs = []
    for i, f in enumerate(rendered):
        depth = f.depth
        if depth_mode == "pred":  # 3% per-frame scale error, as a network's depth would have
            depth = (depth * np.float32(1 + rng.normal(0, 0.03))).astype(np.float32)
        inputs.append(PerceptionFrame(f.timestamp, f.rgb, depth, f.labels, f.K,
                                      pose_prior=f.pose if i == 0 else None))
    t0 = time.perf_counter()
    for pf in inputs:
        bridge.process(pf)
    total = time.perf_counter() - t0
    n = len(inputs)
    tt = bridge.timing_totals
    t1 = time.perf_counter()
    snap = bridge.snapshot()
    t2 = time.perf_counter()
    graph = bridge.scene_graph(snap)
    t3 = time.perf_counter()
    track = tt["track"] + tt["raycast"] + tt["align"]
    integ = tt["integrate"] + tt["semantics"]
    return {"size": f"{width}x{height}", "mode": depth_mode, "frames": n, "voxel_cm": 100 * bridge.voxel_size,
            "track_ms": 1000 * track / n, "integrate_ms": 1000 * integ / n, "fps_track_integrate": n / (track + integ),
            "fps_total": n / total, "mesh_s": t2 - t1, "graph_s": t3 - t2, "vertices": len(snap.vertices),
            "objects": len(graph.objects), "places": len(graph.places)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args(argv)
    rows = [bench(240, 320, args.frames), bench(240, 320, args.frames, "pred"), bench(480, 640, args.frames)]
    cols = ["size", "mode", "frames", "voxel_cm", "track_ms", "integrate_ms", "fps_track_integrate", "fps_total",
            "mesh_s", "graph_s", "vertices", "objects", "places"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
