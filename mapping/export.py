"""Atomic file writers for the map's exports (mesh, point cloud, label space in Hydra's YAML + colour CSV).

Every file is written to a temporary name in the destination folder and moved into place with
``os.replace``, so a reader never sees a half-written export.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml


class ExportError(RuntimeError):
    """An export that could not be written (one-line message)."""


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by extension
    work); on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; exports are ordinary readable files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_mesh(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> Path:
    """Triangle mesh (PLY or GLB by extension) with per-vertex uint8 RGB colours.

    PLY goes through Open3D. Open3D 0.20 writes GLB files with the buffer as a data URI and no binary
    chunk, which its own (ASSIMP) reader rejects, so GLB is written here per the glTF 2.0 spec."""
    import open3d as o3d

    if Path(path).suffix.lower() == ".glb":
        with atomic_path(path) as tmp:
            tmp.write_bytes(glb_bytes(vertices, triangles, colors))
        return Path(path)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64) / 255.0)
    with atomic_path(path) as tmp:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh, write_ascii=False):
            raise ExportError(f"{path}: Open3D could not write the mesh")
    return Path(path)


def glb_bytes(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> bytes:
    """A binary glTF 2.0 file: one mesh, float32 positions, float32 RGB COLOR_0, uint32 indices."""
    import json
    import struct

    pos = np.ascontiguousarray(vertices, np.float32)
    col = np.ascontiguousarray(np.asarray(colors, np.float32) / 255.0, np.float32)
    idx = np.ascontiguousarray(triangles, np.uint32)
    blobs = [idx.tobytes(), pos.tobytes(), col.tobytes()]
    views, offset = [], 0
    for blob, target in zip(blobs, (34963, 34962, 34962)):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": target})
        offset += len(blob)  # every blob is a multiple of 4 bytes
    accessors = [
        {"bufferView": 0, "componentType": 5125, "count": int(idx.size), "type": "SCALAR"},
        {"bufferView": 1, "componentType": 5126, "count": len(pos), "type": "VEC3",
         "min": pos.min(0).tolist() if len(pos) else [0, 0, 0], "max": pos.max(0).tolist() if len(pos) else [0, 0, 0]},
        {"bufferView": 2, "componentType": 5126, "count": len(col), "type": "VEC3"},
    ]
    doc = {"asset": {"version": "2.0", "generator": "m2hmx mapping"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0}], "buffers": [{"byteLength": offset}], "bufferViews": views,
           "accessors": accessors,
           "meshes": [{"primitives": [{"attributes": {"POSITION": 1, "COLOR_0": 2}, "indices": 0, "mode": 4}]}]}
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
            + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def write_point_cloud(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64) / 255.0)
    with atomic_path(path) as tmp:
        if not o3d.io.write_point_cloud(str(tmp), pcd):
            raise ExportError(f"{path}: Open3D could not write the point cloud")
    return Path(path)


def label_space_yaml(label_space) -> dict:
    """Hydra's label-space description (hydra/config/label_spaces/*.yaml keys)."""
    objects = [int(i) for i in label_space.object_ids]
    return {
        "total_semantic_labels": int(label_space.num_classes),
        "dynamic_labels": [],
        "invalid_labels": [],
        "object_labels": objects,
        "surface_places_labels": [int(i) for i in label_space.structure_ids],
        "label_names": [{"label": i, "name": n} for i, n in enumerate(label_space.names)],
    }


def write_label_space(yaml_path: str | Path, csv_path: str | Path, label_space) -> list[Path]:
    """Label space as Hydra's YAML plus its colour table CSV (``name,red,green,blue,alpha,id``)."""
    with atomic_path(yaml_path) as tmp:
        tmp.write_text(yaml.safe_dump(label_space_yaml(label_space), sort_keys=False))
    lines = ["name,red,green,blue,alpha,id"]
    for i, (name, rgb) in enumerate(zip(label_space.names, label_space.colors)):
        lines.append(f"{name},{int(rgb[0])},{int(rgb[1])},{int(rgb[2])},255,{i}")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    return [Path(yaml_path), Path(csv_path)]
