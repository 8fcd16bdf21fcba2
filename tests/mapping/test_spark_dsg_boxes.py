"""The object boxes in ``dsg.json`` / ``dsg.sparkdsg`` read back as the boxes of ``scene_graph.json``."""
import json

import numpy as np
import pytest

from m2hmx.labels import load_label_space
from mapping.scene_graph import ObjectNode, SceneGraph

dsg = pytest.importorskip("spark_dsg")


def test_spark_dsg_boxes_read_back(tmp_path):
    label_space = load_label_space("scannet20")
    objects = [ObjectNode(0, 3, "bed", [1.0, 2.0, 0.4], [0.2, 1.0, 0.0], [2.0, 3.2, 0.8], 500),
               ObjectNode(1, 5, "chair", [-1.0, 0.5, 0.45], [-1.3, 0.2, 0.0], [-0.7, 0.8, 0.9], 200)]
    SceneGraph(objects=objects).write(tmp_path, label_space)
    plain = {o["id"]: o for o in json.loads((tmp_path / "scene_graph.json").read_text())["objects"]}
    for name in ("dsg.json", "dsg.sparkdsg"):
        graph = dsg.DynamicSceneGraph.load(str(tmp_path / name))
        for obj in objects:
            box = graph.get_node(dsg.NodeSymbol("O", obj.id)).attributes.bounding_box
            assert np.all(box.dimensions > 0), (name, box)
            assert np.allclose(box.min, obj.bbox_min, atol=1e-6), (name, box.min, obj.bbox_min)
            assert np.allclose(box.max, obj.bbox_max, atol=1e-6), (name, box.max, obj.bbox_max)
            assert np.allclose(box.world_P_center, (np.array(obj.bbox_min) + obj.bbox_max) / 2, atol=1e-6)
            assert np.allclose(box.min, plain[obj.id]["bbox_min"]) and np.allclose(box.max, plain[obj.id]["bbox_max"])
