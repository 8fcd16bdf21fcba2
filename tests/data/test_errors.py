"""Bad data gives one clear DatasetError line naming the file, never a library traceback."""
import struct

import pytest

from m2hmx.data import DatasetError
from m2hmx.data.sources import open_source
from m2hmx.data.synthetic import SyntheticSource, write_scene
from tests.data.helpers import sens_frame_offsets, write_sens


@pytest.fixture(scope="module")
def frames():
    return list(SyntheticSource(seed=1, frames=3, height=24, width=32))


def _one_line(exc: pytest.ExceptionInfo, name: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and name in msg, msg
    return msg


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        open_source(str(tmp_path / "nowhere"))
    assert "no such file or folder" in _one_line(e, "nowhere")
    with pytest.raises(DatasetError) as e:
        open_source("scannet/scene0999", str(tmp_path))
    _one_line(e, "scene0999_00")


def test_count_mismatch(tmp_path):
    folder = write_scene(tmp_path / "scene", seed=1, frames=3, height=24, width=32, progress=False)
    (folder / "color" / "2.jpg").unlink()
    with pytest.raises(DatasetError) as e:
        open_source(str(folder))
    assert "2 colour images" in _one_line(e, str(folder)) and "3 depth images" in str(e.value)


def test_corrupt_png(tmp_path):
    folder = write_scene(tmp_path / "scene", seed=1, frames=3, height=24, width=32, progress=False)
    (folder / "depth" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    src = open_source(str(folder))
    src[0]
    with pytest.raises(DatasetError) as e:
        src[1]
    assert "cannot decode" in _one_line(e, "depth/1.png")


def test_missing_intrinsics(tmp_path):
    folder = write_scene(tmp_path / "scene", seed=1, frames=2, height=24, width=32, progress=False)
    (folder / "intrinsic" / "intrinsic_depth.txt").write_text("1 2 3\n")
    with pytest.raises(DatasetError) as e:
        open_source(str(folder))
    assert "expected 4x4" in _one_line(e, "intrinsic_depth.txt")


def test_truncated_sens(tmp_path, frames):
    """A cut-off .sens keeps its complete frames (with a warning); a cut-off header is refused."""
    path = write_sens(tmp_path / "t.sens", frames)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 400])
    with pytest.warns(UserWarning, match="cut off in frame 2.*the 2 complete frame"):
        src = open_source(str(path))
    assert len(src) == 2 and src[1].depth.shape == frames[1].depth.shape
    path.write_bytes(data[:100])
    with pytest.raises(DatasetError) as e:
        open_source(str(path))
    assert "truncated" in _one_line(e, "t.sens")


def test_unsupported_sens(tmp_path, frames):
    path = write_sens(tmp_path / "occi.sens", frames, depth_compression=2)
    with pytest.raises(DatasetError) as e:
        open_source(str(path))
    assert "occi_ushort" in _one_line(e, "occi.sens")
    path = write_sens(tmp_path / "v9.sens", frames)
    path.write_bytes(struct.pack("<I", 9) + path.read_bytes()[4:])
    with pytest.raises(DatasetError) as e:
        open_source(str(path))
    assert "version 9" in _one_line(e, "v9.sens")


def test_corrupt_sens_payload(tmp_path, frames):
    path = write_sens(tmp_path / "c.sens", frames)
    data = bytearray(path.read_bytes())
    # first frame's depth (zlib) starts after header + frame header + colour: corrupt a few bytes of it
    doff = sens_frame_offsets(path)[0][2]
    data[doff:doff + 8] = b"\x00" * 8
    path.write_bytes(bytes(data))
    src = open_source(str(path))
    with pytest.raises(DatasetError) as e:
        src[0]
    assert "frame 0" in _one_line(e, "c.sens")


def test_bad_nyu_and_tum_files(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DatasetError) as e:
        open_source(str(tmp_path / "x.mat"))
    _one_line(e, "x.mat")
    tum = tmp_path / "tum"
    tum.mkdir()
    (tum / "rgb.txt").write_text("# c\n1.0 rgb/1.png\n")
    (tum / "depth.txt").write_text("1.0\n")
    with pytest.raises(DatasetError) as e:
        open_source(str(tum))
    assert "line 1" in _one_line(e, "depth.txt")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(DatasetError) as e:
        open_source(str(tmp_path / "notes.xyz"))
    _one_line(e, "notes.xyz")


def test_sens_with_a_corrupt_size_field_says_so(tmp_path, frames):
    path = write_sens(tmp_path / "c.sens", frames)
    data = bytearray(path.read_bytes())
    second = sens_frame_offsets(path)[1][0]  # frame 1's 96-byte header starts here
    data[second + 64 + 16: second + 64 + 24] = struct.pack("<Q", 2 ** 63)  # its colour size
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning) as caught:
        src = open_source(str(path))
    message = str(caught[0].message)
    assert len(src) == 1 and "frame 1 has a corrupt size field" in message and "truncated" not in message
    assert str(2 ** 63) not in message  # no 19-digit byte count
