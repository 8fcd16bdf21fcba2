"""ScanNet ``.sens`` files read directly (layout in docs/design/formats.md).

Versions 3 and 4; colour raw / png / jpeg, depth raw_ushort / zlib_ushort (occi_ushort is proprietary:
reported as unsupported). Colour is registered to the depth size with INTER_AREA and K = intrinsic_depth.
Frames with a -inf pose are skipped with a warning; a damaged file (cut off, or a corrupt size field) keeps the
complete frames before the damage, with a warning. The frame table is indexed once at open (seeking over
the payloads), so access is random.

Version 4's IMU trailer (ScanNet's ``IMUFrame``: rotation rate, acceleration, magnetic field, attitude,
gravity as float64 triples, then a uint64 timestamp in microseconds) becomes ``imu`` when it holds samples.
ScanNet recorded it with an iPad's CoreMotion; we read it by CoreMotion's conventions, which we could not check
against a real ScanNet file: rotation rate in rad/s; raw acceleration in g with the opposite sign of specific
force (about -1 g along the up axis at rest), so specific force = -9.80665 x acceleration (a file whose
accelerations are about 9.8 in magnitude is taken as specific force in m/s^2 already). The device's axes turn
with how it was held, so ``body_T_cam``'s rotation is fitted to the camera poses (``gyro_camera_rotation``);
with too little rotation for a fit it assumes portrait (x right, y up, z out of the screen, the camera looking
along -z: diag(1, -1, -1)) and warns. The translation stays zero.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import IndexedSource, pose_valid, register_color

COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
IMU_FRAME = np.dtype([("rotation_rate", "<f8", 3), ("acceleration", "<f8", 3), ("magnetic_field", "<f8", 3),
                      ("attitude", "<f8", 3), ("gravity", "<f8", 3), ("timestamp", "<u8")])  # 128 bytes
G0 = 9.80665  # standard gravity: g units to m/s^2
DEVICE_T_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes in the iPad's axes, held upright


class SensFile(IndexedSource):
    """Frames of a ScanNet ``.sens`` recording."""

    intrinsics_from = "the .sens header"

    def __init__(self, path):
        self.path = path = Path(path)
        if not path.is_file():
            raise DatasetError(path, "file not found")
        self.name = path.stem
        size = path.stat().st_size
        self._fh = fh = open(path, "rb")

        def read(fmt):
            n = struct.calcsize(fmt)
            b = fh.read(n)
            if len(b) != n:
                raise DatasetError(path, f"truncated .sens header (file is {size} bytes)")
            return struct.unpack(fmt, b)

        (version,) = read("<I")
        if version not in (3, 4):
            raise DatasetError(path, f"unsupported .sens version {version} (supported: 3, 4)")
        (name_len,) = read("<Q")
        if name_len > 4096:
            raise DatasetError(path, "not a .sens file (implausible sensor name length)")
        self.sensor_name = fh.read(name_len).decode("utf-8", "replace")
        mats = np.array(read("<64f"), np.float64).reshape(4, 4, 4)
        self.intrinsic_color, self.extrinsic_color, self.intrinsic_depth, self.extrinsic_depth = mats
        self.color_compression, self.depth_compression = read("<ii")
        self.color_width, self.color_height, self.depth_width, self.depth_height = read("<4I")
        (self.depth_shift,) = read("<f")
        (n_frames,) = read("<Q")
        cc = COLOR_COMPRESSION.get(self.color_compression, str(self.color_compression))
        dc = DEPTH_COMPRESSION.get(self.depth_compression, str(self.depth_compression))
        if cc not in ("raw", "png", "jpeg"):
            raise DatasetError(path, f"unsupported colour compression '{cc}' (supported: raw, png, jpeg)")
        if dc not in ("raw_ushort", "zlib_ushort"):
            raise DatasetError(path, f"unsupported depth compression '{dc}' (supported: raw_ushort, zlib_ushort)")
        if self.depth_shift <= 0:
            raise DatasetError(path, f"invalid depth shift {self.depth_shift}")

        # frame table: (pose, ts_color, colour offset, colour size, depth offset, depth size)
        # A damaged file (cut off, or a corrupt size field) keeps its complete frames before the damage, with a
        # warning, as a video player plays a cut file; with no complete frame it is refused.
        entries, skipped, damage = [], 0, None
        pos = fh.tell()
        for k in range(n_frames):
            fh.seek(pos)
            hdr = fh.read(96)
            if len(hdr) != 96:
                damage = f"the file is cut off in frame {k}'s header"
                break
            vals = struct.unpack("<16fQQQQ", hdr)
            pose = np.array(vals[:16], np.float64).reshape(4, 4)
            ts_color, _ts_depth, csize, dsize = vals[16:]
            if csize > size or dsize > size:
                damage = f"frame {k} has a corrupt size field (larger than the {size}-byte file)"
                break
            coff = pos + 96
            doff = coff + csize
            if doff + dsize > size:
                damage = f"the file is cut off in frame {k} ({doff + dsize - size} bytes missing)"
                break
            pos = doff + dsize
            if pose_valid(pose):
                entries.append((pose, ts_color, coff, csize, doff, dsize, k))
            else:
                skipped += 1
        if damage is not None:
            frames = f"{n_frames}" if n_frames * 96 <= size else "an implausible number of"
            if not entries:
                raise DatasetError(path, f"damaged .sens: {damage}; no complete frame (header: {frames} frames)")
            warnings.warn(f"{path}: damaged .sens: {damage}; reading the {len(entries)} complete frame(s) before it "
                          f"(header: {frames} frames)", stacklevel=2)
        if skipped:
            warnings.warn(f"{path}: skipped {skipped} frame(s) with an invalid (-inf) pose", stacklevel=2)
        self._entries = entries
        self.K = self.intrinsic_depth[:3, :3].copy()
        self.imu_path = path
        if version == 4 and damage is None:  # a damaged file's IMU trailer is lost with its tail
            self.imu = self._read_imu(pos, size)

    def _read_imu(self, pos: int, size: int):
        """The IMU trailer at byte ``pos`` as ``ImuSamples`` (None when it holds no samples)."""
        from mapping.imu import ImuSamples, find_gap, first_violation, gyro_camera_rotation
        from mapping.interface import InterfaceError

        path = self.path
        if pos == size:
            return None  # written without the trailer's count: no IMU
        count = os.pread(self._fh.fileno(), 8, pos)
        if len(count) != 8:
            raise DatasetError(path, f"truncated .sens: the IMU frame count at byte {pos} is cut off")
        (n,) = struct.unpack("<Q", count)
        if n == 0:
            return None
        end = pos + 8 + n * IMU_FRAME.itemsize
        if end > size:
            raise DatasetError(path, f"truncated .sens: {n} IMU frames need bytes up to {end} but the file is {size} bytes")
        rec = np.frombuffer(os.pread(self._fh.fileno(), n * IMU_FRAME.itemsize, pos + 8), IMU_FRAME)
        t, gyro, acc = rec["timestamp"] * 1e-6, rec["rotation_rate"].astype(np.float64), rec["acceleration"]
        finite = np.isfinite(acc).all(1)
        scale = float(np.median(np.linalg.norm(acc[finite], axis=1))) if finite.any() else 0.0
        if 0.5 <= scale <= 2.0:
            accel = -G0 * acc  # CoreMotion: g units, reads -1 g along up at rest
        elif 5.0 <= scale <= 20.0:
            accel = acc.astype(np.float64)
        else:
            raise DatasetError(path, f"IMU accelerations have a median magnitude of {scale:.3g}: neither g (about 1) "
                                     "nor m/s^2 (about 9.8), so their units are unknown")
        problem = first_violation(t, gyro, accel)
        if problem is None and (gap := find_gap(t)) is not None:
            problem = (gap, f"{t[gap] - t[gap - 1]:.3f} s since the previous sample: samples missing")
        if problem is not None:
            raise DatasetError(path, f"IMU frame {problem[0]}: {problem[1]}")
        body_T_cam = DEVICE_T_CAMERA.copy()
        try:
            samples = ImuSamples(t, gyro, accel, body_T_cam)
        except InterfaceError as e:
            raise DatasetError(path, str(e)) from None
        # the device's axes relative to the camera depend on how the iPad was held: fit them to the poses instead
        times = np.array([e[1] for e in self._entries], np.float64) * 1e-6
        rot = gyro_camera_rotation(samples, times, np.array([e[0][:3, :3] for e in self._entries]))
        if rot is None:
            warnings.warn(f"{path}: too little rotation to fit the IMU's axes to the camera poses; assuming the "
                          "iPad's axes in portrait (body_T_cam = diag(1, -1, -1))", stacklevel=3)
            return samples
        body_T_cam[:3, :3] = rot
        return ImuSamples(t, gyro, accel, body_T_cam)

    def __len__(self) -> int:
        return len(self._entries)

    def _time(self, i: int) -> float:
        return self._entries[i][1] * 1e-6

    def _read(self, i: int) -> Frame:
        import cv2

        pose, ts, coff, csize, doff, dsize, k = self._entries[i]
        # positional reads share no file offset, so forked DataLoader workers can read concurrently
        cbytes = os.pread(self._fh.fileno(), csize, coff)
        dbytes = os.pread(self._fh.fileno(), dsize, doff)
        cw, ch, dw, dh = self.color_width, self.color_height, self.depth_width, self.depth_height
        if self.color_compression == 0:
            if len(cbytes) != cw * ch * 3:
                raise DatasetError(self.path, f"frame {k}: raw colour has {len(cbytes)} bytes, expected {cw * ch * 3}")
            rgb = np.frombuffer(cbytes, np.uint8).reshape(ch, cw, 3).copy()
        else:
            bgr = cv2.imdecode(np.frombuffer(cbytes, np.uint8), cv2.IMREAD_COLOR) if cbytes else None
            if bgr is None:
                raise DatasetError(self.path, f"frame {k}: cannot decode the colour image (corrupt)")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        if self.depth_compression == 1:
            try:
                dbytes = zlib.decompress(dbytes)
            except zlib.error:
                raise DatasetError(self.path, f"frame {k}: corrupt zlib depth stream") from None
        if len(dbytes) != dw * dh * 2:
            raise DatasetError(self.path, f"frame {k}: depth has {len(dbytes)} bytes, expected {dw * dh * 2}")
        depth = np.frombuffer(dbytes, "<u2").reshape(dh, dw).astype(np.float32) / np.float32(self.depth_shift)
        rgb = register_color(rgb, dh, dw)
        return Frame(rgb=rgb, K=self.K.copy(), timestamp=ts * 1e-6, index=k, depth=depth, pose=pose.copy())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
