"""How well the generated IMU and ``mapping.imu.preintegrate`` reproduce the camera path, and what they cost.

Run: ``.venv/bin/python -m benchmarks.bench_imu [--seeds 200000-200004] [--frames 300]``. For every window of
30 frames (1 s, starting every 5 frames) the noise-free IMU is preintegrated from the true state with zero bias and
the predicted pose is compared with the path's pose 1 s later. "midpoint" is ``preintegrate``; "held" feeds GTSAM
each sample held until the next one (the usual loop), cut at the same interval ends. Choices were made on seeds
200000+ (validation); the held-out rooms 100000-100004 are report-only.
"""
from __future__ import annotations

import argparse
import math
import time

import gtsam
import numpy as np

from m2hmx.data.synthetic import FPS, make_path, make_scene
from mapping.imu import D435I, preintegrate, preintegration_params


def held(samples, t0, t1, params):
    """Zero-order hold: the sample at or before each piece's start, applied as GTSAM receives it."""
    pim = gtsam.PreintegratedCombinedMeasurements(params, gtsam.imuBias.ConstantBias())
    t = samples.t
    cuts = np.concatenate([[t0], t[(t > t0) & (t < t1)], [t1]])
    idx = np.clip(np.searchsorted(t, cuts[:-1], side="right") - 1, 0, len(t) - 1)
    for k, dt in zip(idx, np.diff(cuts)):
        pim.integrateMeasurement(samples.accel[k], samples.gyro[k], float(dt))
    return pim


def errors(path, imu, integrate, frames: int) -> np.ndarray:
    params = preintegration_params(D435I)
    out = []
    for i0 in range(0, frames - 30, 5):
        t0, t1 = i0 / FPS, (i0 + 30) / FPS
        state = gtsam.NavState(gtsam.Pose3(path.poses(np.array([t0]))[0]), path.positions(np.array([t0]), 1)[0])
        pose = integrate(imu, t0, t1, params).predict(state, gtsam.imuBias.ConstantBias()).pose()
        err = gtsam.Pose3(path.poses(np.array([t1]))[0]).between(pose)
        angle = math.degrees(np.linalg.norm(gtsam.Rot3.Logmap(err.rotation())))
        out.append((np.linalg.norm(err.translation()) * 1e3, angle))
    return np.array(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="200000-200009", help="comma list of seeds or A-B ranges")
    p.add_argument("--frames", type=int, default=300)
    args = p.parse_args(argv)
    seeds = []
    for part in args.seeds.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b or a) + 1))
    print("| seed | windows | midpoint: max / median mm, max deg | held: max / median mm, max deg | "
          "windows over 1 mm (midpoint) | path's peak accel m/s^2 | IMU synthesis ms |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        path = make_path(make_scene(seed), args.frames, seed)
        t = time.perf_counter()
        imu = path.imu(D435I, seed=seed)
        ms = (time.perf_counter() - t) * 1e3
        clean = path.imu(None)
        mid, hold = errors(path, clean, preintegrate, args.frames), errors(path, clean, held, args.frames)
        peak = np.linalg.norm(path.positions(imu.t, 2), axis=1).max()
        print(f"| {seed} | {len(mid)} | {mid[:, 0].max():.3f} / {np.median(mid[:, 0]):.4f}, {mid[:, 1].max():.4f} | "
              f"{hold[:, 0].max():.2f} / {np.median(hold[:, 0]):.3f}, {hold[:, 1].max():.4f} | "
              f"{int((mid[:, 0] > 1).sum())} | {peak:.1f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
