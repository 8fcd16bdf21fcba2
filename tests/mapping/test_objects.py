"""The scene graph's object layer: mesh pieces as objects, and their score against known boxes."""
import numpy as np
import pytest

from m2hmx.labels import load_label_space
from mapping.scene_graph import ObjectNode, box_iou, extract_objects, score_objects

LABELS = load_label_space("scannet20")
CHAIR, TABLE, WALL = (LABELS.names.index(n) for n in ("chair", "table", "wall"))


def grid(x0: float, y0: float, side: float, step: float, z: float = 0.0):
    """A flat square mesh: vertices (n*n, 3) and triangles, ``side`` metres wide."""
    n = int(round(side / step)) + 1
    u, v = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    vertices = np.stack([x0 + u.ravel() * step, y0 + v.ravel() * step, np.full(n * n, z)], 1)
    i = (u[:-1, :-1] * n + v[:-1, :-1]).ravel()
    triangles = np.concatenate([np.stack([i, i + n, i + 1], 1), np.stack([i + 1, i + n, i + n + 1], 1)])
    return vertices, triangles


def node(class_id: int, lo, hi) -> ObjectNode:
    return ObjectNode(0, class_id, LABELS.names[class_id], list(np.add(lo, hi) / 2), list(lo), list(hi), 100)


def test_box_iou_by_hand():
    assert box_iou(np.zeros(3), np.ones(3), np.zeros(3), np.ones(3)) == pytest.approx(1.0)
    # unit cube against the same cube shifted by half along x: overlap 0.5, union 1.5
    assert box_iou(np.zeros(3), np.ones(3), np.array([0.5, 0, 0]), np.array([1.5, 1, 1])) == pytest.approx(1 / 3)
    assert box_iou(np.zeros(3), np.ones(3), np.full(3, 2.0), np.full(3, 3.0)) == 0.0


def test_score_counts_duplicates_and_wrong_classes_as_false_positives():
    truth = [(CHAIR, np.zeros(3), np.ones(3)), (TABLE, np.array([3.0, 0, 0]), np.array([4.0, 1, 1]))]
    nodes = [node(CHAIR, [0, 0, 0], [1, 1, 1]),        # IoU 1 with the chair
             node(CHAIR, [0.5, 0, 0], [1.5, 1, 1]),    # IoU 1/3 with the same chair: a duplicate
             node(CHAIR, [3, 0, 0], [4, 1, 1]),        # on the table's box, but the wrong class
             node(TABLE, [3.5, 0, 0], [4.5, 1, 1])]    # IoU 0.5/1.5 = 1/3 with the table: a match
    score = score_objects(nodes, truth)
    assert (score["matched"], score["nodes"], score["true_objects"]) == (2, 4, 2)
    assert score["precision"] == pytest.approx(0.5) and score["recall"] == pytest.approx(1.0)
    assert score_objects(nodes, truth, min_iou=0.5)["matched"] == 1
    # A picture seen face-on has a flat box: boxes are widened to 10 cm before the IoU.
    flat = [(CHAIR, np.array([0.0, 2, 0]), np.array([1.0, 2, 1]))]
    assert score_objects([node(CHAIR, [0, 2.01, 0], [1, 2.01, 1])], flat)["matched"] == 1  # IoU 0.09 / 0.11
    assert score_objects([node(CHAIR, [0, 2.01, 0], [1, 2.01, 1])], flat, min_extent=0.0)["matched"] == 0
    assert score_objects([], truth)["precision"] is None and score_objects(nodes, [])["recall"] is None


def test_objects_are_connected_mesh_pieces_of_one_class_above_the_minimum_area():
    pieces = [grid(0, 0, 1.0, 0.02), grid(2, 0, 0.5, 0.02), grid(4, 0, 0.2, 0.02), grid(6, 0, 0.5, 0.02)]
    classes = [CHAIR, CHAIR, CHAIR, WALL]  # two chairs apart, a 0.04 m^2 chair patch, a wall
    vertices, triangles, labels, offset = [], [], [], 0
    for (v, t), c in zip(pieces, classes):
        vertices.append(v)
        triangles.append(t + offset)
        labels.append(np.full(len(v), c, np.uint8))
        offset += len(v)
    vertices, triangles, labels = np.concatenate(vertices), np.concatenate(triangles), np.concatenate(labels)
    # A table top in the middle of the first (1 m) piece splits off from the chair around it.
    table = (vertices[:, 0] > 0.2) & (vertices[:, 0] < 0.8) & (vertices[:, 1] > 0.2) & (vertices[:, 1] < 0.8)
    labels[table] = TABLE
    objects = extract_objects(vertices, triangles, labels, LABELS)
    found = sorted((o.name, round(o.bbox_min[0], 2), round(o.bbox_max[0], 2)) for o in objects)
    assert found == [("chair", 0.0, 1.0), ("chair", 2.0, 2.5), ("table", 0.22, 0.78)], found
    chair = next(o for o in objects if o.bbox_min[0] == 2.0)
    assert chair.num_points == 26 * 26 and np.allclose(chair.centroid, [2.25, 0.25, 0])
    assert extract_objects(vertices, triangles, labels, LABELS, min_area=1.0) == []
    assert extract_objects(vertices, triangles, np.full(len(vertices), WALL, np.uint8), LABELS) == []
    # Ids follow class and position, not the mesh's vertex order (which Open3D changes between extractions).
    assert [(o.id, o.name, o.bbox_min[0]) for o in objects] == [(0, "chair", 0.0), (1, "chair", 2.0),
                                                                (2, "table", pytest.approx(0.22))]
    shuffle = np.random.default_rng(0).permutation(len(vertices))
    where = np.argsort(shuffle)  # old vertex index -> new
    again = extract_objects(vertices[shuffle], where[triangles], labels[shuffle], LABELS)
    key = [(o.id, o.class_id, o.bbox_min, o.bbox_max, o.num_points) for o in objects]
    assert [(o.id, o.class_id, o.bbox_min, o.bbox_max, o.num_points) for o in again] == key
    assert np.allclose([o.centroid for o in again], [o.centroid for o in objects])


def test_visible_objects_are_the_seen_parts_of_the_rooms_objects():
    from m2hmx.data.synthetic import SyntheticSource

    source = SyntheticSource(seed=100000)
    seen = source.visible_objects(source.poses[:150])
    assert sorted(o.name for o in seen) == ["bed", "chair", "sofa"]
    for o in seen:
        whole = next(s for s in source.scene.objects if s.class_id == o.class_id and
                     np.all(o.aabb_min >= s.aabb_min - 1e-3) and np.all(o.aabb_max <= s.aabb_max + 1e-3))
        assert np.all(o.extent > 0.1) and np.all(o.extent <= whole.extent + 1e-3)
    assert source.visible_objects(source.poses[:150], min_fraction=1.0) == []


def test_noisy_depth_still_gives_one_node_per_object(tiny_sequence):
    """Depth with 5 % pixel noise and a 3 % per-frame scale error, ground-truth poses and labels. Noisy depth
    scatters the class-evidence voxels into thick shells (the clusters of those used before made 49 nodes here
    for these 6 objects); the TSDF's surface averages the noise away."""
    from mapping.bridge import MappingBridge, MappingConfig
    from mapping.interface import PerceptionFrame

    source, frames = tiny_sequence
    rng = np.random.default_rng(0)
    bridge = MappingBridge(source.label_space, MappingConfig(depth_mode="pred", use_pose_prior=True))
    for f in frames:
        noise = (1 + rng.normal(0, 0.05, f.depth.shape)).astype(np.float32)
        depth = np.where(f.depth > 0, f.depth * np.float32(1 + rng.normal(0, 0.03)) * noise, 0).astype(np.float32)
        bridge.process(PerceptionFrame(f.timestamp, f.rgb, depth, f.labels, f.K, pose_prior=f.pose))
    truth = [(o.class_id, o.aabb_min, o.aabb_max) for o in source.visible_objects(source.poses)]
    score = score_objects(bridge.snapshot().objects, truth)
    assert score["true_objects"] == 6 and score["matched"] == 6 and score["nodes"] <= 7, score
