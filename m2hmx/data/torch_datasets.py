"""PyTorch training dataset over any frame source, with the usual augmentation and label mapping."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from m2hmx.data.frame import Frame
from m2hmx.data.transforms import IMAGENET_MEAN, IMAGENET_STD, scale_intrinsics, semantic_edges
from m2hmx.labels import LabelSpace, load_label_space


def label_mapping(source: LabelSpace | None, target: LabelSpace | None) -> np.ndarray | None:
    """A 256-entry LUT from ``source`` train ids to ``target`` train ids via nyu40 ids (None: identity)."""
    if source is None or target is None or source.name == target.name:
        return None
    lut = np.full(256, target.ignore_index, np.uint8)
    nyu = np.array(source.nyu40_ids)
    lut[: len(nyu)] = target.from_nyu40(nyu)
    return lut


class _CompactFrame:
    """A decoded frame kept in memory compactly (about 0.7 MB at 240x320): depth as uint16 mm, normals as
    int8 (x127, under 0.5 deg error), edges dropped when labels exist (they are recomputed from labels)."""

    __slots__ = ("rgb", "K", "depth_mm", "labels", "normals_q", "edges")

    def __init__(self, f: Frame):
        self.rgb, self.K, self.labels = f.rgb, f.K, f.labels
        self.edges = f.edges if f.labels is None else None
        self.depth_mm = None if f.depth is None else np.round(np.clip(f.depth, 0, 65.535) * 1000).astype(np.uint16)
        self.normals_q = None if f.normals is None else np.round(np.clip(f.normals, -1, 1) * 127).astype(np.int8)

    def frame(self) -> Frame:
        return Frame(
            rgb=self.rgb, K=self.K, timestamp=0.0,
            depth=None if self.depth_mm is None else self.depth_mm.astype(np.float32) / 1000.0,
            labels=self.labels, edges=self.edges,
            normals=None if self.normals_q is None else self.normals_q.astype(np.float32) / 127.0,
        )


class FrameDataset(Dataset):
    """Frames -> training dicts ("image", "depth", "semseg", "normals", "edge", "K"), see the data contract.

    ``frames_or_source``: a list of ``Frame`` or a source with ``__len__`` and ``__getitem__`` (e.g.
    ``SyntheticSource``, ``ScanNetExport``). Frames read from a source are decoded once and kept in
    memory (compactly) when ``cache`` is true; once all are, the source is closed. Labels are mapped from
    the source's label space to ``label_space`` through nyu40 ids (e.g. NYU-40 -> ScanNet-20). With
    ``augment``: random zoom in [1, 1.5] (depth divided by the zoom) then a random crop, horizontal flip
    (normal x negated, cx mirrored) and colour jitter.
    """

    def __init__(self, frames_or_source, size: tuple[int, int] = (240, 320), augment: bool = False,
                 label_space: LabelSpace | str | None = "scannet20", cache: bool = True):
        self.source = frames_or_source
        self.size = (int(size[0]), int(size[1]))
        self.augment = augment
        self.label_space = load_label_space(label_space) if isinstance(label_space, str) else label_space
        src_space = getattr(frames_or_source, "label_space", None)
        self.lut = label_mapping(src_space, self.label_space)
        self.cache = cache and not isinstance(frames_or_source, Sequence)
        self._cached: dict[int, _CompactFrame] = {}

    def __len__(self) -> int:
        return len(self.source)

    @property
    def cached(self) -> int:
        """How many frames the cache holds."""
        return len(self._cached)

    def preload(self) -> None:
        """Decode (render) every frame into the cache now, which then closes the source."""
        if self.cache:
            for i in range(len(self)):
                self._frame(i)

    def _frame(self, i: int) -> Frame:
        if not self.cache:
            return self.source[i]
        c = self._cached.get(i)
        if c is None:
            c = self._cached[i] = _CompactFrame(self.source[i])
            if len(self._cached) == len(self.source) and hasattr(self.source, "close"):
                self.source.close()  # all in memory: free its renderer or file
        return c.frame()

    def __getitem__(self, i: int) -> dict:
        f = self._frame(i)
        H, W = self.size
        h0, w0 = f.rgb.shape[:2]
        if self.augment:
            s = float(torch.empty(1).uniform_(1.0, 1.5))
            sh, sw = max(H, int(round(H * s))), max(W, int(round(W * s)))
            y0 = int(torch.randint(0, sh - H + 1, (1,)))
            x0 = int(torch.randint(0, sw - W + 1, (1,)))
            flip = bool(torch.rand(1) < 0.5)
        else:
            sh, sw, y0, x0, flip = H, W, 0, 0, False
        crop = (slice(y0, y0 + H), slice(x0, x0 + W))

        def resize(a, interp):
            return cv2.resize(a, (sw, sh), interpolation=interp)[crop]

        shrink = sw < w0 and sh < h0
        rgb = resize(f.rgb, cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        K = scale_intrinsics(f.K, sw / w0, sh / h0)
        K[0, 2] -= x0
        K[1, 2] -= y0
        depth = None if f.depth is None else resize(f.depth, cv2.INTER_NEAREST_EXACT)
        if depth is not None and self.augment:
            # Zooming in by z shows what a camera with the un-zoomed focal length sees of the world scaled
            # by 1/z, so depth is divided by z (Metric3D's canonical-camera transform, Yin et al., ICCV 2023):
            # a network that is not given K keeps one metric scale. The returned K stays the exact one of
            # the zoomed image; with depth / z the geometry is that of a uniformly scaled world, so normals
            # and depth-normal consistency are unchanged.
            depth = depth / np.float32(sw / W)
        labels = None
        if f.labels is not None:
            labels = f.labels if self.lut is None else self.lut[f.labels]
            labels = resize(labels, cv2.INTER_NEAREST_EXACT)
        normals = None if f.normals is None else resize(f.normals, cv2.INTER_NEAREST_EXACT)
        edges = None
        if labels is not None:
            edges = semantic_edges(labels)
        elif f.edges is not None:
            edges = resize(f.edges, cv2.INTER_NEAREST_EXACT)

        if flip:
            rgb, depth, labels, normals, edges = (None if a is None else a[:, ::-1] for a in (rgb, depth, labels, normals, edges))
            if normals is not None:
                normals = normals * np.array([-1.0, 1.0, 1.0], np.float32)
            K[0, 2] = (W - 1) - K[0, 2]

        img = rgb.astype(np.float32) / 255.0
        if self.augment:
            img = self._jitter(img)
        img = (img - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)

        out = {"image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
               "K": torch.from_numpy(K.astype(np.float32))}
        if depth is not None:
            out["depth"] = torch.from_numpy(np.ascontiguousarray(depth, np.float32))[None]
        if labels is not None:
            out["semseg"] = torch.from_numpy(np.ascontiguousarray(labels)).long()
        if normals is not None:
            out["normals"] = torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1), np.float32))
        if edges is not None:
            out["edge"] = torch.from_numpy(np.ascontiguousarray(edges, np.float32))[None]
        return out

    @staticmethod
    def _jitter(img: np.ndarray) -> np.ndarray:
        """Brightness, contrast and saturation x U(0.8, 1.2) and a hue-ish channel gain, in [0, 1] RGB."""
        b, c, s = (float(x) for x in torch.empty(3).uniform_(0.8, 1.2))
        gains = torch.empty(3).uniform_(0.95, 1.05).numpy().astype(np.float32)
        img = img * b
        img = (img - img.mean()) * c + img.mean()
        gray = img.mean(axis=2, keepdims=True)
        img = (img - gray) * s + gray
        return np.clip(img * gains, 0.0, 1.0)
