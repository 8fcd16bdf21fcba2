"""Image-space helpers shared by readers, the generator and the torch datasets (numpy + OpenCV only)."""
from __future__ import annotations

import numpy as np

# The network's input normalisation (ImageNet statistics, as torchvision and the Swin/DINO backbones use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def semantic_edges(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """{0,1} uint8 map of class boundaries, 2 px wide (both sides of each change of label).

    A change to or from ``ignore_index`` counts as a boundary too (e.g. wall/ceiling in ScanNet-20).
    """
    lab = np.asarray(labels)
    edges = np.zeros(lab.shape, bool)
    dx = lab[:, 1:] != lab[:, :-1]
    dy = lab[1:, :] != lab[:-1, :]
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    edges[1:, :] |= dy
    edges[:-1, :] |= dy
    return edges.astype(np.uint8)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K for an image resized by (sx, sy), with pixel centres at integer coordinates."""
    K2 = np.array(K, np.float64, copy=True)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """(H,W,3) float unit normals -> uint16 (H,W,3): round((n + 1) / 2 * 65535); unknown (zero) -> 0."""
    n = np.asarray(normals, np.float32)
    valid = np.any(n != 0, axis=-1, keepdims=True)
    enc = np.round((np.clip(n, -1, 1) + 1.0) * 0.5 * 65535.0)
    enc = np.maximum(enc, 1)  # keep (0,0,0) free for "unknown"
    return np.where(valid, enc, 0).astype(np.uint16)


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Camera-frame unit normals (OpenCV axes: x right, y down, z forward) -> the usual normal-map colours (uint8):
    (n + 1) / 2 with y and z flipped to x right, y up, z towards the viewer, so a surface facing the camera is
    lavender-blue (127, 127, 255); unknown (zero) normals black. The viewer's normals panel, its Rerun log and the
    evaluation grid all draw normals with it."""
    n = np.asarray(normals, np.float32)
    rgb = ((n * np.array([1.0, -1.0, -1.0], np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    rgb[~np.any(n != 0, axis=-1)] = 0
    return rgb


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_normals` (all-zero pixels decode to 0 = unknown)."""
    e = np.asarray(encoded)
    n = e.astype(np.float32) / 65535.0 * 2.0 - 1.0
    valid = np.any(e != 0, axis=-1, keepdims=True)
    return np.where(valid, n, 0).astype(np.float32)
