"""NYU Depth v2 labelled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5, read with h5py).

The file stores arrays column-major, so h5py sees ``images`` as [N, 3, W, H], ``depths`` and
``labels`` as [N, W, H]: each is transposed back to [H, W(, 3)]. Raw labels (1..894, 0 unlabelled)
map to NYU-40 through ``assets/nyu894_to_nyu40.json``; frames carry NYU-40 train ids
(nyu40 id - 1, 255 unlabelled). The standard 795 / 654 train / test split comes from the NYU
toolbox's ``splits.mat`` (``trainNdxs`` / ``testNdxs``, 1-based), which the user supplies (or which
sits beside the ``.mat``). Intrinsics: 518.8579, 519.46961, 325.58245, 253.73617 (NYU toolbox).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from m2hmx import ASSETS_DIR
from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.readers._common import IndexedSource
from m2hmx.labels import load_label_space

NYU_K = np.array([[518.8579, 0, 325.58245], [0, 519.46961, 253.73617], [0, 0, 1]], np.float64)


@lru_cache(maxsize=1)
def raw_to_nyu40() -> np.ndarray:
    """LUT raw NYU label id (0..894) -> nyu40 id (0 unlabelled)."""
    spec = json.loads((ASSETS_DIR / "nyu894_to_nyu40.json").read_text())
    return np.concatenate([[0], np.asarray(spec["map"], np.uint8)]).astype(np.uint8)


def read_splits(path) -> dict[str, np.ndarray]:
    """0-based train / test indices from the NYU toolbox's ``splits.mat``."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "splits file not found (the NYU toolbox's splits.mat with trainNdxs/testNdxs)")
    try:
        m = loadmat(path)
        return {"train": np.asarray(m["trainNdxs"]).reshape(-1).astype(np.int64) - 1,
                "test": np.asarray(m["testNdxs"]).reshape(-1).astype(np.int64) - 1}
    except KeyError:
        raise DatasetError(path, "no trainNdxs / testNdxs arrays in this .mat") from None
    except Exception as e:  # scipy raises several types for non-.mat input
        raise DatasetError(path, f"cannot read as a MATLAB file ({type(e).__name__})") from None


H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class NYUv2Labeled(IndexedSource):
    """RGB, metric depth and NYU-40 labels of the 1449 labelled NYUv2 frames (or the train / test split)."""

    intrinsics_from = "NYUv2's published calibration"

    def __init__(self, path, split: str = "all", splits_path=None):
        import h5py

        self.path = path = Path(path)
        if not path.is_file():
            raise DatasetError(path, "file not found")
        try:
            self._h5 = h5py.File(path, "r")
        except OSError:
            raise DatasetError(path, "cannot open as HDF5 (NYUv2 labelled .mat files are MATLAB v7.3)") from None
        try:
            for key in ("images", "depths"):
                if key not in self._h5:
                    self._h5.close()
                    raise DatasetError(path, f"no '{key}' array (not nyu_depth_v2_labeled.mat?)")
            n = self._h5["images"].shape[0]
            if self._h5["images"].ndim != 4 or self._h5["images"].shape[1] != 3:
                raise DatasetError(path, f"'images' has shape {self._h5['images'].shape}, expected [N, 3, W, H]")
            self._has_labels = "labels" in self._h5
        except H5_ERRORS as exc:  # a damaged HDF5 structure: h5py raises any of these
            self._h5.close()
            raise DatasetError(path, f"corrupt HDF5 ({_first_line(exc)})") from None
        self.label_space = load_label_space("nyu40") if self._has_labels else None
        self.name = path.stem if split == "all" else f"{path.stem}-{split}"
        if split == "all":
            self.indices = np.arange(n)
        elif split in ("train", "test"):
            sp = Path(splits_path) if splits_path is not None else path.with_name("splits.mat")
            self.indices = read_splits(sp)[split]
            if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= n):
                raise DatasetError(sp, f"indices outside 1..{n}")
        else:
            raise ValueError(f"split must be 'all', 'train' or 'test', not {split!r}")
        self._lut = self.label_space.from_nyu40(raw_to_nyu40()) if self._has_labels else None

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, i: int) -> Frame:
        k = int(self.indices[i])
        try:
            return self._read_frame(k)
        except H5_ERRORS as exc:
            raise DatasetError(self.path, f"frame {k}: corrupt HDF5 data ({_first_line(exc)})") from None

    def _read_frame(self, k: int) -> Frame:
        rgb = np.ascontiguousarray(self._h5["images"][k].transpose(2, 1, 0)).astype(np.uint8)
        depth = np.ascontiguousarray(self._h5["depths"][k].T).astype(np.float32)
        if rgb.shape[:2] != depth.shape:
            raise DatasetError(self.path, f"frame {k}: colour is {rgb.shape[1]}x{rgb.shape[0]} but depth "
                                          f"{depth.shape[1]}x{depth.shape[0]}")
        if not (np.isfinite(depth).all() and (depth >= 0).all()):
            raise DatasetError(self.path, f"frame {k}: depth holds non-finite or negative values (corrupt)")
        labels = None
        if self._has_labels:
            raw = self._h5["labels"][k].T
            labels = np.where(raw < len(self._lut), self._lut[np.minimum(raw, len(self._lut) - 1)], 255).astype(np.uint8)
        from m2hmx.data.transforms import semantic_edges

        return Frame(rgb=rgb, K=NYU_K.copy(), timestamp=float(k), index=k, depth=depth, labels=labels,
                     edges=None if labels is None else semantic_edges(labels))

    def close(self) -> None:
        self._h5.close()
