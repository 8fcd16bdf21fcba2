"""The map's export writers (mesh PLY/GLB, point cloud PLY, label space in Hydra's YAML + colour CSV).

Every file goes through ``mapping.atomic``: written to a temporary name, checked, then renamed into place, so
a reader never sees a half-written export and a failed export (a full disk) keeps the previous files. PLY and
GLB are encoded here, not by Open3D, whose writers return True on a full disk with a truncated file; each
file's exact size is known before it is written, and the written size is checked against it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mapping.atomic import AtomicBatch, ExportError, atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["AtomicBatch", "ExportError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "glb_bytes",
           "ply_bytes", "write_mesh", "write_point_cloud", "write_label_space", "export_map_update"]

EXPORT_FILES = ("mesh.ply", "mesh_rgb.ply", "mesh.glb", "points.ply", "trajectory.tum", "trajectory.csv",
                "scene_graph.json", "dsg.json", "dsg.sparkdsg", "labelspace.yaml", "labelspace_colors.csv")
LOOP_EXPORT_FILES = ("pose_graph.g2o",)  # written as well when loop closure is on


def _write(path: str | Path, chunks: list[bytes], batch: AtomicBatch | None) -> Path:
    if batch is not None:
        return batch.write_bytes(path, *chunks)
    return atomic_write_bytes(path, *chunks)


def ply_bytes(vertices: np.ndarray, colors: np.ndarray, triangles: np.ndarray | None = None) -> list[bytes]:
    """A binary little-endian PLY (header, vertex rows, face rows): double x/y/z and uchar RGB per vertex (the
    layout Open3D writes and reads), faces as a uchar count and three int indices."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    rows = np.empty(len(v), np.dtype([("xyz", "<f8", 3), ("rgb", "u1", 3)]))
    rows["xyz"], rows["rgb"] = v, np.asarray(colors, np.uint8).reshape(-1, 3)
    header = ["ply", "format binary_little_endian 1.0", "comment m2hmx mapping", f"element vertex {len(v)}",
              "property double x", "property double y", "property double z",
              "property uchar red", "property uchar green", "property uchar blue"]
    chunks = [rows.tobytes()]
    if triangles is not None:
        t = np.asarray(triangles, np.int64).reshape(-1, 3)
        faces = np.empty(len(t), np.dtype([("n", "u1"), ("idx", "<i4", 3)]))
        faces["n"], faces["idx"] = 3, t
        header += [f"element face {len(t)}", "property list uchar int vertex_indices"]
        chunks.append(faces.tobytes())
    return [("\n".join(header + ["end_header"]) + "\n").encode()] + chunks


def write_mesh(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray,
               batch: AtomicBatch | None = None) -> Path:
    """Triangle mesh (PLY or GLB by extension) with per-vertex uint8 RGB colours, atomically (or into
    ``batch``). Open3D 0.20 writes GLB files with the buffer as a data URI and no binary chunk, which its own
    (ASSIMP) reader rejects, so GLB is written here per the glTF 2.0 spec."""
    if Path(path).suffix.lower() == ".glb":
        return _write(path, [glb_bytes(vertices, triangles, colors)], batch)
    return _write(path, ply_bytes(vertices, colors, triangles), batch)


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


def write_point_cloud(path: str | Path, points: np.ndarray, colors: np.ndarray,
                      batch: AtomicBatch | None = None) -> Path:
    """Coloured point cloud as binary PLY, atomically (or into ``batch``)."""
    return _write(path, ply_bytes(points, colors), batch)


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


def write_label_space(yaml_path: str | Path, csv_path: str | Path, label_space,
                      batch: AtomicBatch | None = None) -> list[Path]:
    """Label space as Hydra's YAML plus its colour table CSV (``name,red,green,blue,alpha,id``)."""
    lines = ["name,red,green,blue,alpha,id"]
    for i, (name, rgb) in enumerate(zip(label_space.names, label_space.colors)):
        lines.append(f"{name},{int(rgb[0])},{int(rgb[1])},{int(rgb[2])},255,{i}")
    texts = {yaml_path: yaml.safe_dump(label_space_yaml(label_space), sort_keys=False),
             csv_path: "\n".join(lines) + "\n"}
    return [_write(p, [t.encode()], batch) for p, t in texts.items()]


def export_map_update(update, out_dir: str | Path, label_space) -> list[Path]:
    """Write a map update (``app.mapping_process.MapUpdate``: the GUI's copy of the map, when the mapping process
    is gone) as the process would have, all or none (``mapping.atomic``): the whole mesh as PLY (class and RGB colours) and GLB, the trajectory
    (TUM and Hydra CSV), the scene graph and the label space. Differences from ``MappingBridge.export``:
    ``points.ply`` holds the mesh's vertices, not the TSDF's surface points (the same surface: 182,753 against
    182,822 points for generated room 0 after 300 frames), there is no ``pose_graph.g2o``, and the map is the
    one of the last update (up to one snapshot interval old). An update without a scene graph (sent by an
    older process) gets one of its object boxes only."""
    from mapping.scene_graph import ObjectNode, SceneGraph

    out = Path(out_dir)
    v, t, class_colors, rgb = update.whole_mesh or (update.vertices, update.triangles, update.class_colors,
                                                     update.rgb_colors)
    graph = update.graph
    if graph is None:
        names = list(label_space.names)
        objects = [ObjectNode(i, names.index(name) if name in names else 255, name,
                              ((np.asarray(lo) + hi) / 2).tolist(), np.asarray(lo).tolist(), np.asarray(hi).tolist(),
                              0) for i, (name, lo, hi) in enumerate(update.objects)]
        graph = SceneGraph(objects=[o for o in objects if o.class_id != 255])
    return write_map_files(out, (v, t, class_colors, rgb), (v, rgb), update.timestamps, update.poses, graph,
                           label_space)


def write_map_files(out_dir: str | Path, mesh: tuple, points: tuple, timestamps: np.ndarray, poses: np.ndarray,
                    graph, label_space, pose_graph=None) -> list[Path]:
    """Every export file of a map into ``out_dir``, all or none (``AtomicBatch``): ``mesh`` (vertices, triangles,
    class colours, RGB colours) as PLY and GLB, ``points`` (points, RGB) as PLY, the trajectory (TUM and Hydra CSV),
    ``pose_graph`` (``mapping.pose_graph.PoseGraph``) as g2o, the scene graph and the label space. Files of
    ``EXPORT_FILES`` this map has no content for are removed (a previous run's), so the folder never mixes two."""
    from mapping.trajectory import write_hydra_csv, write_tum

    out = Path(out_dir)
    vertices, triangles, class_colors, rgb_colors = mesh
    with AtomicBatch() as batch:
        if triangles is not None and len(triangles):
            write_mesh(out / "mesh.ply", vertices, triangles, class_colors, batch)
            write_mesh(out / "mesh_rgb.ply", vertices, triangles, rgb_colors, batch)
            write_mesh(out / "mesh.glb", vertices, triangles, class_colors, batch)
        if len(points[0]):
            write_point_cloud(out / "points.ply", *points, batch)
        if len(timestamps):
            write_tum(out / "trajectory.tum", timestamps, poses, batch)
            write_hydra_csv(out / "trajectory.csv", timestamps, poses, batch)
        if pose_graph is not None and len(pose_graph):
            pose_graph.write_g2o(out / "pose_graph.g2o", batch)
        graph.write(out, label_space, batch)
        write_label_space(out / "labelspace.yaml", out / "labelspace_colors.csv", label_space, batch)
        written = batch.commit()
    for name in (*EXPORT_FILES, *LOOP_EXPORT_FILES):
        if out / name not in written:
            (out / name).unlink(missing_ok=True)  # a previous run's file this map has no content for
    return written
