"""Fault-injection fixtures: two small real maps (Open3D TSDF, ground-truth poses) and a tmpfs mount helper."""
import contextlib
import hashlib
import subprocess
from pathlib import Path

import pytest

from app.pipeline import to_perception_frame
from m2hmx.data.synthetic import SyntheticSource
from mapping.bridge import MappingBridge, MappingConfig
from tests.app.conftest import demo_options, gl_display, make_window  # noqa: F401  (the viewer fixtures)


def build_maps(counts=(6, 12)) -> list[MappingBridge]:
    """The same room mapped over its first ``n`` frames for each n, 120x160, 4 cm voxels."""
    source = SyntheticSource(seed=0, frames=max(counts), height=120, width=160)
    frames = list(source)
    maps = []
    for n in counts:
        bridge = MappingBridge(source.label_space, MappingConfig(use_pose_prior=True, voxel_size=0.04))
        for f in frames[:n]:
            bridge.process(to_perception_frame(f, None, "sensor", source.label_space.num_classes, pose_prior=True))
        maps.append(bridge)
    return maps


@pytest.fixture(scope="session")
def two_maps():
    """(map A, map B): the same room after 6 and after 12 frames (their exports differ)."""
    return build_maps((6, 12))


def digests(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` (hidden ones too) -> its SHA-1."""
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


@contextlib.contextmanager
def tmpfs(folder: Path, size_bytes: int):
    """A real size-limited tmpfs at ``folder``; skips the test when mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root; the "
                    "write-wrapper test covers the same failure")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def viewer(demo_options, make_window):
    """A viewer window on a generated room at 120x160 without a network; keywords override ViewerOptions."""
    return lambda **kw: make_window(demo_options(**kw))


@contextlib.contextmanager
def read_only_folder(folder: Path):
    """A folder nobody can write into, root included: a read-only tmpfs (root), else mode 0555."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"root cannot be kept from writing without a read-only mount ({done.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
