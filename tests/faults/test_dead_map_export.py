"""A map whose mapping process died exports whole from the GUI's copy (``mapping.export.export_map_update``):
the same mesh, trajectory and scene graph (places and rooms too) as the live process's own export."""
import json

import open3d as o3d

from app import mapping_process
from app.mapping_process import make_update
from mapping.export import export_map_update
from mapping.bridge import EXPORT_FILES

from .conftest import digests


def test_dead_map_exports_what_the_live_process_would(two_maps, tmp_path, monkeypatch):
    bridge = two_maps[1]
    snap = bridge.snapshot()
    graph = bridge.scene_graph(snap)
    assert len(snap.triangles) > 1000 and graph.places  # a map with a mesh and free-space places
    monkeypatch.setattr(mapping_process, "MAX_MESH_TRIANGLES", 1000)  # the GUI draws a point sample of it
    monkeypatch.setattr(mapping_process, "MAX_POINTS", 500)
    update = make_update(snap, bridge.frames, 1.0, graph)
    assert update.triangles is None and len(update.vertices) == 500

    live = bridge.export(tmp_path / "live", snap)
    dead = export_map_update(update, tmp_path / "dead", bridge.label_space)
    assert {p.name for p in dead} == {p.name for p in live} == set(EXPORT_FILES)
    same, differ = digests(tmp_path / "live"), digests(tmp_path / "dead")
    for name in ("mesh.ply", "mesh_rgb.ply", "mesh.glb", "trajectory.tum", "trajectory.csv", "scene_graph.json",
                 "dsg.json", "dsg.sparkdsg", "labelspace.yaml", "labelspace_colors.csv"):
        assert same[name] == differ[name], name  # byte for byte
    points = len(o3d.io.read_point_cloud(str(tmp_path / "dead" / "points.ply")).points)
    assert points == len(snap.vertices)  # the mesh's vertices, not the 500-point sample
    places = json.loads((tmp_path / "dead" / "scene_graph.json").read_text())["places"]
    assert len(places) == len(graph.places) > 0


def test_update_without_graph_keeps_its_objects_and_clears_old_files(two_maps, tmp_path):
    bridge = two_maps[0]
    snap = bridge.snapshot()
    bridge.export(tmp_path / "out", snap)  # a previous export with every file
    update = make_update(snap, bridge.frames, 1.0)  # no scene graph (an older process)
    update.timestamps = update.timestamps[:0]
    update.poses = update.poses[:0]
    written = {p.name for p in export_map_update(update, tmp_path / "out", bridge.label_space)}
    assert "trajectory.tum" not in written
    assert {p.name for p in (tmp_path / "out").iterdir()} == written  # no file of the previous export left
    objects = json.loads((tmp_path / "out" / "scene_graph.json").read_text())["objects"]
    assert len(objects) == len([o for o in snap.objects if o.class_id != 255])
