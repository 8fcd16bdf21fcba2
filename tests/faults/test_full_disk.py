"""A full disk during an export: the previous export stays whole, nothing half-written is left, and the error
names the file and the cause. Two ways: a real size-limited tmpfs (needs root) and, always, a write wrapper
that fails with ENOSPC at byte N of the export."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapping.bridge import EXPORT_FILES
from mapping.export import ExportError

from .conftest import digests, tmpfs

ROOT = Path(__file__).resolve().parents[2]
CPP_WRITTEN = {"dsg.json", "dsg.sparkdsg"}  # spark-dsg writes these from C++ (os.write is not on its path)
PAGE = 4096


def _reference(two_maps, tmp_path_factory):
    """Map B's export written once, for its files' sizes and write order."""
    ref = tmp_path_factory.mktemp("reference")
    written = two_maps[1].export(ref)
    return [(p.name, p.stat().st_size) for p in written]


def test_reference_export_is_complete(two_maps, tmp_path):
    names = [p.name for p in two_maps[1].export(tmp_path)]
    assert names == list(EXPORT_FILES)


@pytest.mark.parametrize("target", [n for n in EXPORT_FILES if n not in CPP_WRITTEN])
def test_write_failing_at_byte_n_keeps_previous_export(two_maps, tmp_path, tmp_path_factory, monkeypatch, target):
    map_a, map_b = two_maps
    out = tmp_path / "map"
    map_a.export(out)
    before = digests(out)
    sizes = _reference(two_maps, tmp_path_factory)
    python_written = [(n, s) for n, s in sizes if n not in CPP_WRITTEN]
    k = [n for n, _ in python_written].index(target)
    fail_at = sum(s for _, s in python_written[:k]) + python_written[k][1] // 2
    real_write, count = os.write, [0]

    def write(fd, data):  # the disk fills at byte fail_at of this export: a short write, then ENOSPC
        room = fail_at - count[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(memoryview(data)[:room]))
        count[0] += n
        return n

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(ExportError) as info:
        map_b.export(out)
    monkeypatch.undo()
    message = str(info.value)
    assert str(out / target) in message and "No space left on device" in message and "\n" not in message
    assert digests(out) == before  # the previous export, whole: no mix, no temporary files
    assert count[0] == fail_at


def test_full_tmpfs_at_each_export_file_keeps_previous_export(two_maps, tmp_path, tmp_path_factory):
    map_a, map_b = two_maps
    sizes = _reference(two_maps, tmp_path_factory)
    pages = [-(-s // PAGE) for _, s in sizes]
    with tmpfs(tmp_path / "disk", 8 << 20) as disk:
        out = disk / "map"
        map_a.export(out)
        before = digests(out)
        for k, (target, _) in enumerate(sizes):
            filler = disk / "filler"
            filler.unlink(missing_ok=True)
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            room = (sum(pages[:k]) + pages[k] // 2) * PAGE  # the disk fills inside file k
            filler.write_bytes(b"\0" * (free - room))
            with pytest.raises(ExportError) as info:
                map_b.export(out)
            message = str(info.value)
            assert str(out / target) in message and "\n" not in message, (target, message)
            assert "No space left on device" in message or "load back" in message, message
            assert digests(out) == before, target
        filler.unlink()
        written = map_b.export(out)  # space again: the new export replaces the old one whole
        assert [p.name for p in written] == list(EXPORT_FILES) and digests(out) != before


def test_map_cli_on_full_tmpfs_names_the_file_and_keeps_nothing_partial(tmp_path):
    with tmpfs(tmp_path / "disk", 256 << 10) as disk:
        done = subprocess.run([sys.executable, "-m", "app.map_cli", "--dataset", "synthetic:0", "--max-frames", "4",
                               "--gt-poses", "--out", str(disk / "map"), "--no-progress", "--voxel-size", "0.05"],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=120)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert str(disk / "map") in lines[0] and "No space left on device" in lines[0], lines[0]
        assert not [p for p in (disk / "map").iterdir() if p.name.startswith(".")]


CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
from tests.faults.conftest import build_maps
map_a = build_maps((6,))[0]
real = os.write
def slow(fd, data):  # write 1000 bytes, then hang (the parent kills us mid-export)
    real(fd, bytes(memoryview(data)[:1000]))
    time.sleep(3600)
os.write = slow
map_a.export({out!r})
"""


def test_kill_during_export_leaves_no_partial_file_after_next_export(two_maps, tmp_path):
    out = tmp_path / "map"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), out=str(out))], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 90
    while not (out.is_dir() and [p for p in out.iterdir() if ".partial-" in p.name]):
        assert time.monotonic() < deadline and child.poll() is None, "the child never started writing"
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert [p for p in out.iterdir() if ".partial-" in p.name]  # what a kill -9 leaves behind
    written = two_maps[1].export(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
