"""Test-only writers for small .sens files (the layout in docs/design/formats.md)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def write_sens(path: Path, frames, color_compression: int = 2, depth_compression: int = 1,
               version: int = 4, depth_shift: float = 1000.0, imu_frames: np.ndarray | None = None) -> Path:
    """Write ``frames`` (Frame objects with rgb, depth, pose, K) as a ScanNet .sens file; version 4 ends with
    ``imu_frames`` (a ``m2hmx.data.readers.sens.IMU_FRAME`` record array), none by default. Frame k's colour and
    depth timestamps are k * 33333 us."""
    frames = list(frames)
    h, w = frames[0].depth.shape
    K4 = np.eye(4, dtype=np.float32)
    K4[:3, :3] = frames[0].K
    name = b"m2hmx-test"
    out = [struct.pack("<IQ", version, len(name)), name]
    for M in (K4, np.eye(4), K4, np.eye(4)):
        out.append(np.asarray(M, "<f4").tobytes())
    out.append(struct.pack("<ii4IfQ", color_compression, depth_compression, w, h, w, h, depth_shift, len(frames)))
    for k, f in enumerate(frames):
        if color_compression == 2:
            cbytes = cv2.imencode(".jpg", f.rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        elif color_compression == 1:
            cbytes = cv2.imencode(".png", f.rgb[:, :, ::-1])[1].tobytes()
        else:
            cbytes = np.ascontiguousarray(f.rgb).tobytes()
        raw = np.round(f.depth * depth_shift).astype("<u2").tobytes()
        dbytes = zlib.compress(raw) if depth_compression == 1 else raw
        pose = np.full((4, 4), -np.inf) if f.pose is None else f.pose
        out.append(np.asarray(pose, "<f4").tobytes())
        out.append(struct.pack("<QQQQ", int(k * 33333), int(k * 33333), len(cbytes), len(dbytes)))
        out += [cbytes, dbytes]
    if version == 4:
        imu = np.zeros(0, np.uint8) if imu_frames is None else imu_frames
        out += [struct.pack("<Q", len(imu)), imu.tobytes()]
    Path(path).write_bytes(b"".join(out))
    return Path(path)


def sens_frame_offsets(path: Path) -> list[tuple[int, int, int]]:
    """Each frame's (header, colour, depth) byte offsets in a .sens file, read from the format (96-byte frame
    headers: a 4x4 float pose, two timestamps, the colour and depth sizes) without the reader."""
    data = Path(path).read_bytes()
    _, name_len = struct.unpack_from("<IQ", data, 0)
    at = 12 + name_len + 4 * 64
    layout = "<ii4IfQ"
    count = struct.unpack_from(layout, data, at)[-1]
    at += struct.calcsize(layout)
    offsets = []
    for _ in range(count):
        csize, dsize = struct.unpack_from("<QQ", data, at + 64 + 16)
        offsets.append((at, at + 96, at + 96 + csize))
        at += 96 + csize + dsize
    return offsets


def write_nyu_mat(path, n=3, h=6, w=8):
    """A tiny NYUv2-labelled-style .mat (HDF5); returns the arrays in image layout."""
    import h5py

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    raw = np.zeros((n, h, w), np.uint16)
    raw[:, 0, :] = 21  # wall (raw id 21 -> nyu40 1)
    raw[:, 1, :] = 11  # floor (raw 11 -> nyu40 2)
    raw[:, 2, :] = 5  # chair (raw 5 -> nyu40 5)
    raw[:, 3, 1] = 4  # ceiling (raw 4 -> nyu40 22)
    with h5py.File(path, "w") as fh:  # MATLAB v7.3 stores column-major: h5py sees the transposes
        fh["images"] = rgb.transpose(0, 3, 2, 1)
        fh["depths"] = depth.transpose(0, 2, 1)
        fh["labels"] = raw.transpose(0, 2, 1)
    return rgb, depth, raw


def write_tum(folder: Path, n: int = 6) -> float:
    """A TUM RGB-D folder of ``n`` 8x10 frames (frame 3's depth unmatched) with 90 Hz ground truth; returns the
    first timestamp."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    rgb_lines, depth_lines, gt_lines = ["# color images"], ["# depth maps"], ["# timestamp tx ty tz qx qy qz qw"]
    t0 = 1305031102.0
    for k in range(n):
        t = t0 + k / 30
        img = np.full((8, 10, 3), 20 * k, np.uint8)
        cv2.imwrite(str(folder / "rgb" / f"{t:.6f}.png"), img)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        td = t + (0.011 if k != 3 else 0.05)  # frame 3's depth is too far off: unmatched
        cv2.imwrite(str(folder / "depth" / f"{td:.6f}.png"), np.full((8, 10), 5000 * (k + 1), np.uint16))
        depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
    for k in range(n * 3):  # ground truth at 90 Hz
        t = t0 + k / 90 + 0.002
        gt_lines.append(f"{t:.4f} {k * 0.01:.4f} 0 1.5 0 0 0.7071068 0.7071068")
    (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (folder / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    return t0
