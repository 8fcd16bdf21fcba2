"""Reader fuzzing shared by ``tests/faults/test_fuzz_readers.py`` (small, in CI) and ``benchmarks/fuzz_readers.py``
(>= 1,000 inputs per format): a small valid sample of each format, one of its files damaged by byte flips,
truncation and extension, then read like ``m2hmx-map`` reads it. The property: one clear ``DatasetError`` line
naming a file of the sample, or frames that are well formed (and, for a cut-off file, exactly the frames
before the cut); never another exception, never a hang."""
from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from m2hmx.data import DatasetError
from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import SyntheticSource, write_scene
from tests.data.helpers import write_nyu_mat, write_sens

H, W, N = 24, 32, 4
TIMEOUT_S = 20  # one example: far above a normal read (~10 ms), so a hang is caught, a slow machine is not


@dataclass
class Sample:
    spec: str  # what open_source gets
    target: Path  # the file that is damaged
    frames: list  # the frames of the undamaged sample (reference)


def _frames():
    return list(SyntheticSource(seed=1, frames=N, height=H, width=W))


def _sens(root: Path) -> Sample:
    path = write_sens(root / "s.sens", _frames())
    return Sample(str(path), path, [])


def _scannet(root: Path, target: str) -> Sample:
    folder = write_scene(root / "scene", seed=1, frames=N, height=H, width=W, progress=False)
    return Sample(str(folder), folder / target, [])


def _tum(root: Path, target: str) -> Sample:
    from tests.data.helpers import write_tum

    folder = root / "rgbd_dataset_freiburg1_fuzz"
    write_tum(folder, n=N)
    return Sample(str(folder), folder / target, [])


def _sevenscenes(root: Path, target: str) -> Sample:
    folder = root / "seq-01"
    folder.mkdir(parents=True)
    for k, f in enumerate(_frames()):
        cv2.imwrite(str(folder / f"frame-{k:06d}.color.png"), f.rgb[:, :, ::-1])
        cv2.imwrite(str(folder / f"frame-{k:06d}.depth.png"), np.round(f.depth * 1000).astype(np.uint16))
        np.savetxt(folder / f"frame-{k:06d}.pose.txt", f.pose)
    return Sample(str(folder), folder / target, [])


def _nyu(root: Path) -> Sample:
    path = root / "nyu_depth_v2_labeled.mat"
    write_nyu_mat(path, n=N, h=H, w=W)
    return Sample(str(path), path, [])


def _images(root: Path) -> Sample:
    folder = root / "images"
    folder.mkdir()
    for k, f in enumerate(_frames()):
        cv2.imwrite(str(folder / f"{k:04d}.png"), f.rgb[:, :, ::-1])
    return Sample(str(folder), folder / "0002.png", [])


FORMATS = {  # name -> builder of a valid sample in a folder; the target is the damaged file
    "sens": _sens,
    "scannet-color-jpg": lambda r: _scannet(r, "color/2.jpg"),
    "scannet-depth-png": lambda r: _scannet(r, "depth/2.png"),
    "scannet-pose-txt": lambda r: _scannet(r, "pose/2.txt"),
    "scannet-intrinsic-txt": lambda r: _scannet(r, "intrinsic/intrinsic_depth.txt"),
    "tum-groundtruth": lambda r: _tum(r, "groundtruth.txt"),
    "tum-rgb-list": lambda r: _tum(r, "rgb.txt"),
    "7scenes-pose-txt": lambda r: _sevenscenes(r, "frame-000002.pose.txt"),
    "7scenes-depth-png": lambda r: _sevenscenes(r, "frame-000002.depth.png"),
    "nyu-mat": _nyu,
    "image-folder-png": _images,
}


def build(name: str, root: Path) -> Sample:
    """The valid sample of format ``name`` under ``root`` (its reference frames read once)."""
    sample = FORMATS[name](root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = open_source(sample.spec)
        sample.frames = list(src)
        src.close()
    return sample


def damage(data: bytes, flips: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    """``data`` with bytes XOR-ed at positions (taken modulo the length), cut to ``cut`` bytes, then extended."""
    out = bytearray(data)
    for pos, xor in flips:
        if out:
            out[pos % len(out)] ^= xor or 1
    if cut is not None:
        out = out[: cut % (len(data) + 1)]
    return bytes(out) + extra


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang(f"no answer within {TIMEOUT_S} s")


def read_damaged(sample: Sample, root: Path, data: bytes) -> tuple[str, list]:
    """Read every frame of the sample (under ``root``) with its target file replaced by ``data`` (restored
    afterwards); returns what happened ("ok", "partial": frames then a DatasetError, or "refused") and the
    frames read. Raises AssertionError on a violation of the property (another exception, a hang, a
    malformed frame)."""
    original = sample.target.read_bytes()
    sample.target.write_bytes(data)
    try:
        return _read_all(sample.spec, root)
    finally:
        sample.target.write_bytes(original)


def _read_all(spec: str, root: Path) -> tuple[str, list]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    frames, outcome = [], "ok"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = open_source(spec)
            try:
                for frame in src:
                    _check_frame(frame)
                    frames.append(frame)
            finally:
                src.close()
    except DatasetError as exc:
        message = str(exc)
        assert "\n" not in message and str(root) in message, f"unclear error: {message!r}"
        outcome = "partial" if frames else "refused"
    except Hang as exc:
        raise AssertionError(f"hang: {exc}") from None
    except Exception as exc:  # noqa: BLE001: the property is that nothing else escapes
        raise AssertionError(f"{type(exc).__name__} escaped the reader: {exc}") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return outcome, frames


def check_prefix(sample: Sample, frames: list) -> None:
    """A file that was only cut off: what is read is the undamaged sample's first frames, unchanged."""
    assert len(frames) <= len(sample.frames)
    for got, ref in zip(frames, sample.frames):
        assert np.array_equal(got.rgb, ref.rgb) and np.array_equal(got.depth, ref.depth), "a changed frame"


def _check_frame(frame) -> None:
    assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3, "malformed rgb"
    assert np.isfinite(frame.K).all(), "non-finite intrinsics"
    if frame.depth is not None:
        assert frame.depth.shape == frame.rgb.shape[:2], "depth and colour sizes differ"
        assert np.isfinite(frame.depth).all() and (frame.depth >= 0).all(), "non-finite or negative depth"
    if frame.pose is not None:
        assert frame.pose.shape == (4, 4) and np.isfinite(frame.pose).all(), "non-finite pose"
