"""Procedural furnished rooms rendered with Open3D's CPU ray caster, with full ground truth.

``make_scene(seed)`` builds a room (floor, walls, ceiling, doors, windows) furnished with ScanNet-20
classes made of boxes, each part with its own procedural material (class-typical but overlapping
colours, wood grain / stripes / tiles / noise patterns in world coordinates). ``SyntheticSource``
renders a smooth hand-held walkthrough of it: RGB (Lambertian shading from two point lights plus
ambient, mild vignetting and sensor noise), z-depth in metres, ScanNet-20 train ids (ceiling = 255),
camera-frame normals facing the camera, 2 px semantic edges, camera-to-world poses and intrinsics, and the
IMU a D435i at the camera would record along the path (200 Hz, gravity, white noise and bias random walk).
``write_scene`` writes all of it in the ScanNet export layout. Everything is a function of the seed
(``numpy.random.default_rng`` only).

World frame: z up, the room spans [0, W] x [0, D] x [0, H]. Camera frame: OpenCV (x right, y down,
z forward).
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m2hmx.data.frame import Frame
from m2hmx.data.splits import FIRST_RESERVED_SEED
from m2hmx.data.transforms import encode_normals, semantic_edges
from m2hmx.labels import LabelSpace, load_label_space
from mapping.atomic import atomic_write_bytes
from mapping.imu import D435I, write_euroc_csv

FPS = 30.0
IMU_RATE_HZ = 200.0  # the generated IMU's rate (a D435i's gyroscope stream)
GRAVITY = 9.81  # m/s^2, along -z of the z-up world (mapping.imu.preintegration_params' default)
HFOV_DEG = 62.0  # horizontal field of view, a typical RGB-D sensor's (Kinect v1 ~ 58-63 deg)
CEILING = 255  # ScanNet-20 has no ceiling class: ignore
# Rooms with this seed and above are held out: training refuses them (m2hmx.train.build_dataset), so the bundled
# model's metrics, the viewer's demo room and the predicted-depth mapping runs use rooms it never saw. Which
# reserved range is validation and which is test: m2hmx.data.splits.
FIRST_HELD_OUT_SEED = FIRST_RESERVED_SEED

# --------------------------------------------------------------------------------------------
# Materials: base colour ranges (RGB in [0,1]) and texture patterns.
PLAIN, WOOD, STRIPES, TILES, NOISE = range(5)
_FAMILIES = {
    # name: (low RGB, high RGB, patterns)
    "wood": ((0.35, 0.20, 0.10), (0.75, 0.55, 0.35), (WOOD,)),
    "paint": ((0.60, 0.60, 0.55), (0.95, 0.95, 0.92), (PLAIN, NOISE)),
    "pastel": ((0.55, 0.50, 0.45), (0.90, 0.85, 0.80), (PLAIN, NOISE, STRIPES)),
    "fabric": ((0.15, 0.15, 0.15), (0.85, 0.75, 0.70), (NOISE, STRIPES, PLAIN)),
    "ceramic": ((0.80, 0.80, 0.80), (0.98, 0.98, 0.98), (PLAIN, TILES)),
    "metal": ((0.45, 0.45, 0.48), (0.85, 0.85, 0.88), (PLAIN, NOISE)),
    "dark": ((0.05, 0.05, 0.05), (0.35, 0.30, 0.30), (PLAIN, NOISE, WOOD)),
    "art": ((0.05, 0.05, 0.05), (0.95, 0.95, 0.95), (STRIPES, NOISE, TILES)),
    "floor": ((0.30, 0.22, 0.15), (0.80, 0.75, 0.70), (WOOD, TILES, NOISE)),
}


@dataclass
class SceneObject:
    """One furniture item (or picture / curtain): its class and axis-aligned bounding box in world metres."""

    class_id: int
    name: str
    aabb_min: np.ndarray
    aabb_max: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.aabb_min + self.aabb_max) / 2.0

    @property
    def extent(self) -> np.ndarray:
        return self.aabb_max - self.aabb_min


@dataclass
class Scene:
    """A furnished room: the triangle mesh plus per-triangle class, object and material."""

    seed: int
    room_size: np.ndarray  # (3,) W, D, H metres
    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (T, 3) int32
    triangle_class: np.ndarray  # (T,) uint8 train ids (255 ceiling)
    triangle_object: np.ndarray  # (T,) int32 index into objects, -1 for structure
    triangle_material: np.ndarray  # (T,) int32 index into the material arrays
    materials: dict  # "base" (M,3), "second" (M,3), "pattern" (M,), "freq" (M,), "offset" (M,2)
    lights: np.ndarray  # (L, 3) positions
    light_colors: np.ndarray  # (L, 3)
    noise_texture: np.ndarray  # (64, 64) smooth value noise in [0, 1]
    objects: list[SceneObject] = field(default_factory=list)
    label_space: LabelSpace = field(default_factory=lambda: load_label_space("scannet20"))

    @property
    def mesh(self):
        """The whole room as an Open3D legacy TriangleMesh, vertex-coloured by class."""
        import open3d as o3d

        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices), o3d.utility.Vector3iVector(self.triangles)
        )
        lut = np.zeros((256, 3))
        lut[: self.label_space.num_classes] = self.label_space.colors / 255.0
        colors = np.zeros((len(self.vertices), 3))
        colors[self.triangles.reshape(-1)] = np.repeat(lut[self.triangle_class], 3, axis=0)
        mesh.vertex_colors = o3d.utility.Vector3dVector(colors)
        mesh.compute_triangle_normals()
        return mesh

    def raycasting_scene(self):
        """An Open3D ``RaycastingScene`` holding the room (geometry id 0, primitive id = triangle)."""
        import open3d as o3d

        rs = o3d.t.geometry.RaycastingScene()
        rs.add_triangles(
            o3d.core.Tensor(self.vertices.astype(np.float32)), o3d.core.Tensor(self.triangles.astype(np.uint32))
        )
        return rs


class _Builder:
    """Accumulates boxes into one mesh, with class / object / material per triangle."""

    # 12 triangles of a unit box, outward winding; corner k has bits (x, y, z).
    _BOX_TRIS = np.array(
        [[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
         [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]], np.int32)
    _CORNERS = np.array([[(k >> 0) & 1, (k >> 1) & 1, (k >> 2) & 1] for k in range(8)], np.float64)

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.verts, self.tris, self.cls, self.obj, self.mat = [], [], [], [], []
        self.nverts = 0
        self.mat_base, self.mat_second, self.mat_pattern, self.mat_freq, self.mat_offset = [], [], [], [], []

    def material(self, family: str) -> int:
        lo, hi, patterns = _FAMILIES[family]
        rng = self.rng
        base = rng.uniform(lo, hi)
        pattern = patterns[rng.integers(len(patterns))]
        second = np.clip(base * rng.uniform(0.55, 0.85) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        if pattern == STRIPES and family in ("fabric", "art", "pastel"):
            second = rng.uniform(lo, hi)  # contrasting stripe colour
        freq = {PLAIN: 1.0, WOOD: rng.uniform(6, 14), STRIPES: rng.uniform(3, 10),
                TILES: rng.uniform(1.5, 4), NOISE: rng.uniform(4, 12)}[pattern]
        self.mat_base.append(base)
        self.mat_second.append(second)
        self.mat_pattern.append(pattern)
        self.mat_freq.append(freq)
        self.mat_offset.append(rng.uniform(0, 64, 2))
        return len(self.mat_base) - 1

    def box(self, lo, hi, class_id: int, obj: int, mat: int) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.verts.append(lo + self._CORNERS * (hi - lo))
        self.tris.append(self._BOX_TRIS + self.nverts)
        self.nverts += 8
        self.cls.append(np.full(12, class_id, np.uint8))
        self.obj.append(np.full(12, obj, np.int32))
        self.mat.append(np.full(12, mat, np.int32))


# --------------------------------------------------------------------------------------------
# Furniture, in local coordinates: footprint [0, w] x [0, d], front at y = 0, back at y = d.

def _bed(rng, b, ids):
    w, d = rng.uniform(1.0, 1.8), rng.uniform(1.95, 2.1)
    frame_m, mattress_m = b.material(["wood", "dark"][rng.integers(2)]), b.material("fabric")
    return (w, d), [
        ((0, 0, 0), (w, d, 0.3), ids["bed"], frame_m),
        ((0.03, 0.03, 0.3), (w - 0.03, d - 0.1, 0.5), ids["bed"], mattress_m),
        ((0, d - 0.08, 0), (w, d, rng.uniform(0.8, 1.1)), ids["bed"], frame_m),
        ((0.1, d - 0.55, 0.5), (w - 0.1, d - 0.12, 0.62), ids["bed"], b.material("fabric")),
    ]


def _legs(w, d, h, t, cid, m):
    return [((x, y, 0), (x + t, y + t, h), cid, m) for x in (0.02, w - 0.02 - t) for y in (0.02, d - 0.02 - t)]


def _chair(rng, b, ids):
    w, d, hs = rng.uniform(0.42, 0.55), rng.uniform(0.42, 0.55), rng.uniform(0.42, 0.48)
    m, seat = b.material(["wood", "metal", "dark"][rng.integers(3)]), b.material(["fabric", "wood"][rng.integers(2)])
    c = ids["chair"]
    return (w, d), _legs(w, d, hs - 0.04, 0.04, c, m) + [
        ((0, 0, hs - 0.05), (w, d, hs), c, seat), ((0, d - 0.05, hs), (w, d, hs + rng.uniform(0.35, 0.5)), c, seat)]


def _table(rng, b, ids, cls="table"):
    w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78)
    m = b.material(["wood", "paint", "dark"][rng.integers(3)])
    c = ids[cls]
    return (w, d), _legs(w, d, h - 0.04, 0.05, c, m) + [((0, 0, h - 0.04), (w, d, h), c, m)]


def _desk(rng, b, ids):
    w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.8), rng.uniform(0.72, 0.76)
    m = b.material(["wood", "paint", "dark"][rng.integers(3)])
    c = ids["desk"]
    return (w, d), [((0, 0, h - 0.03), (w, d, h), c, m), ((0, 0, 0), (0.03, d, h - 0.03), c, m),
                    ((w - 0.03, 0, 0), (w, d, h - 0.03), c, m),
                    ((w - 0.45, 0.02, h - 0.25), (w - 0.03, d, h - 0.03), c, b.material("paint"))]


def _sofa(rng, b, ids):
    w, d = rng.uniform(1.5, 2.3), rng.uniform(0.8, 0.95)
    m, c = b.material("fabric"), ids["sofa"]
    return (w, d), [((0, 0, 0.08), (w, d, 0.42), c, m), ((0, d - 0.2, 0.08), (w, d, rng.uniform(0.75, 0.9)), c, m),
                    ((0, 0, 0.08), (0.18, d, 0.62), c, m), ((w - 0.18, 0, 0.08), (w, d, 0.62), c, m),
                    ((0.05, 0.05, 0), (w - 0.05, d - 0.05, 0.08), c, b.material("dark"))]


def _cabinet(rng, b, ids):
    w, d, h = rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.6), rng.uniform(0.6, 2.0)
    m, c = b.material(["wood", "paint", "pastel"][rng.integers(3)]), ids["cabinet"]
    parts = [((0, 0.02, 0), (w, d, h), c, m)]
    n_doors = 2 if w > 0.8 else 1
    door_m = b.material(["wood", "paint", "pastel"][rng.integers(3)])
    for k in range(n_doors):  # slightly proud doors
        x0, x1 = w * k / n_doors + 0.01, w * (k + 1) / n_doors - 0.01
        parts.append(((x0, 0, 0.05), (x1, 0.02, h - 0.02), c, door_m))
    return (w, d), parts


def _bookshelf(rng, b, ids):
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.2, 2.0)
    m, c, t = b.material(["wood", "paint", "dark"][rng.integers(3)]), ids["bookshelf"], 0.03
    parts = [((0, 0, 0), (t, d, h), c, m), ((w - t, 0, 0), (w, d, h), c, m), ((0, d - t, 0), (w, d, h), c, m)]
    n = int(h / 0.38)
    for k in range(n + 1):
        z = k * (h - t) / n
        parts.append(((t, 0, z), (w - t, d - t, z + t), c, m))
        if k < n:  # a row of books: one box per shelf, its own colour
            bw = rng.uniform(0.4, 0.9) * (w - 2 * t)
            x0 = t + rng.uniform(0, w - 2 * t - bw)
            parts.append(((x0, 0.05, z + t), (x0 + bw, d - t, z + t + rng.uniform(0.18, 0.28)), c, b.material("art")))
    return (w, d), parts


def _counter(rng, b, ids):
    w, d, h = rng.uniform(1.2, 2.6), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.92)
    return (w, d), [((0, 0.03, 0), (w, d, h - 0.04), ids["cabinet"], b.material(["wood", "paint", "pastel"][rng.integers(3)])),
                    ((0, 0, h - 0.04), (w, d, h), ids["counter"], b.material(["ceramic", "dark", "metal"][rng.integers(3)]))]


def _sink(rng, b, ids):
    w, d, h = rng.uniform(0.45, 0.65), rng.uniform(0.4, 0.5), rng.uniform(0.8, 0.88)
    c, m, t = ids["sink"], b.material("ceramic"), 0.03
    return (w, d), [((0.15 * w, 0.2 * d, 0), (0.85 * w, d, h - 0.18), c, m), ((0, 0, h - 0.18), (w, d, h - 0.15), c, m),
                    ((0, 0, h - 0.15), (t, d, h), c, m), ((w - t, 0, h - 0.15), (w, d, h), c, m),
                    ((0, 0, h - 0.15), (w, t, h), c, m), ((0, d - t, h - 0.15), (w, d, h), c, m)]


def _toilet(rng, b, ids):
    w, d = rng.uniform(0.36, 0.42), rng.uniform(0.62, 0.72)
    c, m = ids["toilet"], b.material("ceramic")
    return (w, d), [((0.08, 0.1, 0), (w - 0.08, d - 0.15, 0.3), c, m), ((0, 0, 0.3), (w, d - 0.15, 0.42), c, m),
                    ((0, d - 0.2, 0.3), (w, d, 0.78), c, m)]


def _bathtub(rng, b, ids):
    w, d, h, t = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6), 0.07
    c, m = ids["bathtub"], b.material("ceramic")
    parts = [((0, 0, 0), (w, d, 0.1), c, m), ((0, 0, 0), (t, d, h), c, m), ((w - t, 0, 0), (w, d, h), c, m),
             ((0, 0, 0), (w, t, h), c, m), ((0, d - t, 0), (w, d, h), c, m)]
    if rng.random() < 0.7:  # a half-drawn shower curtain along the front edge
        x1 = w * rng.uniform(0.3, 0.7)
        parts.append(((0, 0.01, h + 0.05), (x1, 0.03, rng.uniform(1.9, 2.05)), ids["shower curtain"], b.material("fabric")))
    return (w, d), parts


def _fridge(rng, b, ids):
    w, d, h = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.7), rng.uniform(1.6, 1.95)
    c, m = ids["refridgerator"], b.material(["metal", "paint", "dark"][rng.integers(3)])
    return (w, d), [((0, 0.02, 0), (w, d, h), c, m), ((0.01, 0, 0.02), (w - 0.01, 0.02, 0.6 * h), c, m),
                    ((0.01, 0, 0.6 * h + 0.01), (w - 0.01, 0.02, h - 0.01), c, m)]


def _other(rng, b, ids):
    w, d, h = rng.uniform(0.4, 1.3), rng.uniform(0.35, 0.6), rng.uniform(0.45, 1.1)
    c, m = ids["otherfurniture"], b.material(["wood", "paint", "dark", "pastel"][rng.integers(4)])
    return (w, d), [((0, 0, 0.06), (w, d, h), c, m), ((0.03, 0.03, 0), (w - 0.03, d - 0.03, 0.06), c, b.material("dark"))]


# room kind -> (required items, optional pool); wall-standing unless the item is in _FREE
_ROOMS = {
    "bedroom": (["bed", "cabinet"], ["other", "desk", "chair", "bookshelf", "cabinet", "other", "sofa"]),
    "living": (["sofa", "table"], ["chair", "chair", "bookshelf", "cabinet", "other", "sofa", "desk"]),
    "office": (["desk", "chair"], ["desk", "chair", "bookshelf", "bookshelf", "cabinet", "table", "other"]),
    "kitchen": (["counter", "fridge"], ["table", "chair", "chair", "cabinet", "counter", "sink", "other"]),
    "bathroom": (["toilet", "sink", "bathtub"], ["cabinet", "other", "sink"]),
}
_MAKERS = {"bed": _bed, "chair": _chair, "table": _table, "desk": _desk, "sofa": _sofa, "cabinet": _cabinet,
           "bookshelf": _bookshelf, "counter": _counter, "sink": _sink, "toilet": _toilet, "bathtub": _bathtub,
           "fridge": _fridge, "other": _other}
_FREE = {"table", "chair"}


def _place(parts, footprint, wall, pos):
    """Turn local parts so their back (local +y) faces ``wall`` (0: y = 0, 1: x = W, 2: y = D, 3: x = 0)
    and move the footprint's min corner to ``pos`` (x, y). Only quarter turns / axis swaps, so every
    part stays an axis-aligned box."""
    w, d = footprint
    out = []
    for lo, hi, c, m in parts:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if wall == 0:  # back at y = 0: mirror y
            lo2, hi2 = (lo[0], d - hi[1], lo[2]), (hi[0], d - lo[1], hi[2])
        elif wall == 2:  # back at y = D (local back is +y already)
            lo2, hi2 = lo, hi
        elif wall == 1:  # back at x = W: local y -> world x, local x -> world y
            lo2, hi2 = (lo[1], lo[0], lo[2]), (hi[1], hi[0], hi[2])
        else:  # back at x = 0
            lo2, hi2 = (d - hi[1], lo[0], lo[2]), (d - lo[1], hi[0], hi[2])
        off = np.array([pos[0], pos[1], 0.0])
        out.append((np.asarray(lo2) + off, np.asarray(hi2) + off, c, m))
    return out


def make_scene(seed: int) -> Scene:
    """A furnished room, a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    ls = load_label_space("scannet20")
    ids = {n: i for i, n in enumerate(ls.names)}
    W, D, H = rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5), rng.uniform(2.5, 3.0)
    kind = list(_ROOMS)[rng.integers(len(_ROOMS))]
    if kind == "bathroom":
        W, D = rng.uniform(3.2, 4.5), rng.uniform(3.2, 4.5)
    b = _Builder(rng)

    # structure: floor, ceiling, four walls (0.1 m thick, outside the interior)
    wall_m = b.material(["paint", "pastel"][rng.integers(2)])
    b.box((-0.1, -0.1, -0.1), (W + 0.1, D + 0.1, 0), ids["floor"], -1, b.material("floor" if kind != "bathroom" else "ceramic"))
    b.box((-0.1, -0.1, H), (W + 0.1, D + 0.1, H + 0.1), CEILING, -1, b.material("paint"))
    b.box((-0.1, -0.1, 0), (W + 0.1, 0, H), ids["wall"], -1, wall_m)
    b.box((-0.1, D, 0), (W + 0.1, D + 0.1, H), ids["wall"], -1, wall_m)
    b.box((-0.1, 0, 0), (0, D, H), ids["wall"], -1, wall_m)
    b.box((W, 0, 0), (W + 0.1, D, H), ids["wall"], -1, wall_m)

    wall_len = [W, D, W, D]
    used = [[] for _ in range(4)]  # occupied intervals along each wall (doors, windows, wall furniture)
    objects: list[SceneObject] = []
    n_items = 0

    def wall_box(wall, s0, s1, z0, z1, depth):
        """A box flush on wall ``wall`` spanning [s0, s1] along it, protruding ``depth`` into the room."""
        if wall == 0:
            return (s0, 0, z0), (s1, depth, z1)
        if wall == 2:
            return (s0, D - depth, z0), (s1, D, z1)
        if wall == 3:
            return (0, s0, z0), (depth, s1, z1)
        return (W - depth, s0, z0), (W, s1, z1)

    def free_interval(wall, width, margin=0.05):
        for _ in range(30):
            s0 = rng.uniform(0.1, wall_len[wall] - width - 0.1) if wall_len[wall] > width + 0.2 else None
            if s0 is None:
                return None
            if all(s0 + width + margin <= a or s0 >= b_ + margin for a, b_ in used[wall]):
                used[wall].append((s0, s0 + width))
                return s0
        return None

    def add_object(cid, name, lo, hi):
        objects.append(SceneObject(cid, name, np.asarray(lo, float), np.asarray(hi, float)))
        return len(objects) - 1

    # doors (1-2) and windows (1-2)
    for _ in range(1 + int(rng.random() < 0.3)):
        wall, w = int(rng.integers(4)), rng.uniform(0.8, 0.95)
        s0 = free_interval(wall, w + 0.3)
        if s0 is not None:
            lo, hi = wall_box(wall, s0 + 0.15, s0 + 0.15 + w, 0, rng.uniform(2.0, 2.15), 0.03)
            b.box(lo, hi, ids["door"], -1, b.material(["wood", "paint", "dark"][rng.integers(3)]))
    for _ in range(1 + int(rng.random() < 0.5)):
        wall, w = int(rng.integers(4)), rng.uniform(0.8, 1.8)
        s0 = free_interval(wall, w + 0.6)
        if s0 is None:
            continue
        z0, z1 = rng.uniform(0.8, 1.0), min(H - 0.25, rng.uniform(2.0, 2.3))
        lo, hi = wall_box(wall, s0 + 0.3, s0 + 0.3 + w, z0, z1, 0.02)
        b.box(lo, hi, ids["window"], -1, b.material(["paint", "metal"][rng.integers(2)]))
        if rng.random() < 0.7:  # curtains either side
            cm = b.material("fabric")
            for c0 in (s0, s0 + 0.3 + w):
                lo, hi = wall_box(wall, c0 + 0.02, c0 + 0.28, 0.05, z1 + 0.15, 0.08)
                b.box(lo, hi, ids["curtain"], add_object(ids["curtain"], "curtain", lo, hi), cm)

    # furniture
    required, pool = _ROOMS[kind]
    n_target = int(rng.integers(8, 13))
    wanted = list(required) + [pool[i] for i in rng.integers(len(pool), size=n_target)]
    grid_res = 0.05
    occ = np.zeros((int(math.ceil(W / grid_res)), int(math.ceil(D / grid_res))), bool)

    def footprint_free(lo, hi, gap):
        i0, j0 = max(int((lo[0] - gap) / grid_res), 0), max(int((lo[1] - gap) / grid_res), 0)
        i1, j1 = int(math.ceil((hi[0] + gap) / grid_res)), int(math.ceil((hi[1] + gap) / grid_res))
        return not occ[i0:i1, j0:j1].any()

    def mark(lo, hi):
        occ[int(lo[0] / grid_res):int(math.ceil(hi[0] / grid_res)), int(lo[1] / grid_res):int(math.ceil(hi[1] / grid_res))] = True

    for item in wanted:
        if n_items >= 14:
            break
        for _attempt in range(60 if item in required else 25):
            (w, d), parts = _MAKERS[item](rng, b, ids)
            wall = int(rng.integers(4))
            if item in _FREE:
                pos = (rng.uniform(0.6, W - 0.6 - (d if wall % 2 else w)), rng.uniform(0.6, D - 0.6 - (w if wall % 2 else d)))
            else:
                along = rng.uniform(0.05, wall_len[wall] - w - 0.05) if wall_len[wall] > w + 0.1 else None
                if along is None:
                    continue
                pos = {0: (along, 0.0), 2: (along, D - d), 3: (0.0, along), 1: (W - d, along)}[wall]
            placed = _place(parts, (w, d), wall, pos)
            lo = np.min([p[0] for p in placed], axis=0)
            hi = np.max([p[1] for p in placed], axis=0)
            if lo[0] < -1e-9 or lo[1] < -1e-9 or hi[0] > W + 1e-9 or hi[1] > D + 1e-9:
                continue
            if not footprint_free(lo, hi, 0.08):
                continue
            # keep room to walk: at least 12 % of the floor must stay 0.4 m away from furniture
            trial = occ.copy()
            mark(lo, hi)
            if _walkable_fraction(occ, grid_res) < 0.12:
                occ[:] = trial
                continue
            by_class: dict[int, list] = {}
            for plo, phi, c, m in placed:
                by_class.setdefault(c, []).append((plo, phi, m))
            for c, boxes in by_class.items():
                olo = np.min([x[0] for x in boxes], axis=0)
                ohi = np.max([x[1] for x in boxes], axis=0)
                oi = add_object(c, ls.names[c], olo, ohi)
                for plo, phi, m in boxes:
                    b.box(plo, phi, c, oi, m)
            n_items += 1
            break

    # pictures on free wall stretches
    for _ in range(int(rng.integers(1, 4))):
        wall, w = int(rng.integers(4)), rng.uniform(0.3, 1.0)
        s0 = free_interval(wall, w)
        if s0 is None:
            continue
        z0 = rng.uniform(1.2, 1.7)
        lo, hi = wall_box(wall, s0, s0 + w, z0, z0 + rng.uniform(0.3, 0.7), 0.025)
        if not footprint_free(np.asarray(lo), np.asarray(hi), 0.0) and z0 < 2.0:
            continue  # behind tall furniture
        b.box(lo, hi, ids["picture"], add_object(ids["picture"], "picture", lo, hi), b.material("art"))

    lights = np.array([[rng.uniform(0.2, 0.8) * W, rng.uniform(0.2, 0.8) * D, H - 0.2] for _ in range(2)])
    light_colors = np.array([rng.uniform([0.9, 0.8, 0.7], [1.0, 0.95, 0.85]), rng.uniform([0.7, 0.8, 0.9], [0.9, 0.95, 1.0])])
    noise = rng.random((64, 64))
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(noise, 1.5, mode="wrap")
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-9)

    return Scene(
        seed=seed,
        room_size=np.array([W, D, H]),
        vertices=np.concatenate(b.verts),
        triangles=np.concatenate(b.tris),
        triangle_class=np.concatenate(b.cls),
        triangle_object=np.concatenate(b.obj),
        triangle_material=np.concatenate(b.mat),
        materials={"base": np.array(b.mat_base), "second": np.array(b.mat_second),
                   "pattern": np.array(b.mat_pattern), "freq": np.array(b.mat_freq),
                   "offset": np.array(b.mat_offset)},
        lights=lights,
        light_colors=light_colors,
        noise_texture=noise.astype(np.float32),
        objects=objects,
        label_space=ls,
    )


def _walkable_fraction(occ: np.ndarray, res: float, clearance: float = 0.4) -> float:
    """Fraction of the floor grid farther than ``clearance`` from furniture and 0.5 m from the walls."""
    free = _walkable(occ, res, clearance)
    return float(free.mean())


def _walkable(occ: np.ndarray, res: float, clearance: float, wall_margin: float = 0.5) -> np.ndarray:
    import cv2

    r = int(math.ceil(clearance / res))
    grown = cv2.dilate(occ.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    free = ~grown
    m = int(math.ceil(wall_margin / res))
    free[:m, :] = free[-m:, :] = False
    free[:, :m] = free[:, -m:] = False
    return free


# --------------------------------------------------------------------------------------------
# Camera walkthrough

def default_intrinsics(height: int, width: int) -> np.ndarray:
    """Pinhole K with a 62 deg horizontal FOV, square pixels, principal point at the image centre."""
    f = 0.5 * width / math.tan(math.radians(HFOV_DEG) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def _look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes) looking along (yaw, pitch) with ``roll`` about the view axis."""
    f = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    dn = np.cross(f, r)
    R = np.stack([r, dn, f], axis=1)
    c, s = math.cos(roll), math.sin(roll)
    return R @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_trajectory(scene: Scene, frames: int, seed: int) -> np.ndarray:
    """(frames, 4, 4) camera-to-world poses of ``make_path`` at the frame times."""
    return make_path(scene, frames, seed).frame_poses


def make_path(scene: Scene, frames: int, seed: int, revisit: bool = False) -> CameraPath:
    """A smooth hand-held walk through free floor space, as a ``CameraPath`` through its frame poses.

    Positions follow a cubic spline through random free waypoints at 1.2-1.7 m height, sampled at a
    constant walking speed (0.25-0.4 m/s at 30 Hz, about 1 cm per frame); the view direction follows
    a spline through yaw/pitch angles that look at furniture; small roll and shake are added. With
    ``revisit`` the walk goes out and comes back the same way to where it started (see ``_revisit_path``).
    """
    if revisit:
        return _revisit_path(scene, frames, seed)
    rng = np.random.default_rng([seed, 1])
    W, D, H = scene.room_size
    free, soft = _floor_grids(scene)
    cells = np.argwhere(free)
    speed = rng.uniform(0.25, 0.4)
    pts = _waypoints(rng, cells, soft, frames * speed / FPS + 1.0)
    xy = np.array(pts)
    z = rng.uniform(1.2, 1.7, len(xy))
    P = np.column_stack([xy, z])

    # look directions: at each waypoint, toward a furniture item (or a wall point) >= 1 m away
    targets = [o.center for o in scene.objects if o.class_id != CEILING]
    yaws, pitches = [], []
    for p in P:
        for _ in range(20):
            t = targets[rng.integers(len(targets))] if targets and rng.random() < 0.85 else \
                np.array([rng.uniform(0, W), rng.uniform(0, D), rng.uniform(0.5, 2.0)])
            v = t - p
            if np.linalg.norm(v[:2]) > 1.0:
                break
        yaws.append(_turn(yaws, math.atan2(v[1], v[0]), 2.0))
        pitches.append(float(np.clip(math.atan2(v[2], np.linalg.norm(v[:2])), -0.6, 0.25)))
    return _sample_path(scene, rng, P, np.column_stack([yaws, pitches]), frames, speed)


def _turn(yaws: list, yaw: float, limit: float) -> float:
    """``yaw`` unwrapped next to the last of ``yaws`` and turned at most ``limit`` rad from it."""
    if not yaws:
        return yaw
    return yaws[-1] + np.clip((yaw - yaws[-1] + math.pi) % (2 * math.pi) - math.pi, -limit, limit)


def _floor_grids(scene: Scene, res: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(free, soft) floor grids at ``res``: where waypoints may lie (0.35 m from furniture, 0.5 m from walls;
    looser in a crowded room) and where the spline between them may pass (0.12 m, 0.3 m)."""
    W, D, H = scene.room_size
    occ = np.zeros((int(math.ceil(W / res)), int(math.ceil(D / res))), bool)
    for o in scene.objects:
        if o.aabb_max[2] < 0.05 or o.extent[0] < 0.04 and o.extent[1] < 0.04:
            continue
        occ[max(int(o.aabb_min[0] / res), 0):int(math.ceil(o.aabb_max[0] / res)),
            max(int(o.aabb_min[1] / res), 0):int(math.ceil(o.aabb_max[1] / res))] = True
    free = _walkable(occ, res, 0.35)
    if free.sum() < 10:
        free = _walkable(occ, res, 0.15, wall_margin=0.35)
    return free, _walkable(occ, res, 0.12, wall_margin=0.3)


def _waypoints(rng, cells: np.ndarray, soft: np.ndarray, need: float, res: float = 0.05) -> list:
    """Random free waypoints 0.8-2.5 m apart, each straight segment on ``soft`` floor, until the walk is ``need``
    metres long."""
    def cell_xy(c):
        return (c + rng.random(2)) * res

    def segment_ok(p0, p1):
        n = max(int(np.linalg.norm(p1 - p0) / 0.05), 2)
        pts = p0[None] + (p1 - p0)[None] * np.linspace(0, 1, n)[:, None]
        ij = np.clip((pts / res).astype(int), 0, np.array(soft.shape) - 1)
        return bool(soft[ij[:, 0], ij[:, 1]].all())

    pts = [cell_xy(cells[rng.integers(len(cells))])]
    length = 0.0
    while length < need:
        best = None
        for _ in range(40):
            cand = cell_xy(cells[rng.integers(len(cells))])
            dist = np.linalg.norm(cand - pts[-1])
            if 0.8 <= dist <= 2.5 and segment_ok(pts[-1], cand):
                best = cand
                break
        if best is None:  # small room: any free cell, even if close
            best = cell_xy(cells[rng.integers(len(cells))])
            if np.linalg.norm(best - pts[-1]) < 0.2:
                continue
        length += float(np.linalg.norm(best - pts[-1]))
        pts.append(best)
    return pts


def _sample_path(scene: Scene, rng, P: np.ndarray, angles: np.ndarray, frames: int,
                 speed: float | None) -> CameraPath:
    """Natural cubic splines through the waypoints ``P`` and their (yaw, pitch) ``angles`` (parameter: chord
    length), sampled at a constant ``speed`` at ``FPS`` (None: the frames cover the whole walk), with hand shake
    and roll added, clipped to the room, as a ``CameraPath``."""
    from scipy.interpolate import CubicSpline

    W, D, H = scene.room_size
    chord = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(P, axis=0), axis=1))])
    spline = CubicSpline(chord, P, bc_type="natural")
    ang = CubicSpline(chord, angles, bc_type="natural")
    # constant-speed resampling by arc length
    dense = np.linspace(0, chord[-1], max(len(P) * 200, 2000))
    dp = np.linalg.norm(np.diff(spline(dense), axis=0), axis=1)
    arc = np.concatenate([[0], np.cumsum(dp)])
    if speed is None:
        speed = arc[-1] * FPS / max(frames - 1, 1)
    s = np.minimum(np.arange(frames) * speed / FPS, arc[-1])
    u = np.interp(s, arc, dense)

    t_sec = np.arange(frames) / FPS
    shake = np.zeros((frames, 3))
    for k in range(3):  # smooth hand shake, a few mm
        for _ in range(2):
            f, ph, a = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * math.pi), rng.uniform(0.001, 0.004)
            shake[:, k] += a * np.sin(2 * math.pi * f * t_sec + ph)
    roll = np.zeros(frames)
    for _ in range(2):
        f, ph, a = rng.uniform(0.05, 0.3), rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(0.5, 2.0))
        roll += a * np.sin(2 * math.pi * f * t_sec + ph)

    pos = spline(u) + shake
    pos[:, 0] = np.clip(pos[:, 0], 0.25, W - 0.25)
    pos[:, 1] = np.clip(pos[:, 1], 0.25, D - 0.25)
    pos[:, 2] = np.clip(pos[:, 2], 1.0, H - 0.4)
    yp = ang(u)
    poses = np.zeros((frames, 4, 4))
    for i in range(frames):
        poses[i, :3, :3] = _look_rotation(yp[i, 0], float(np.clip(yp[i, 1], -0.7, 0.3)), roll[i])
        poses[i, :3, 3] = pos[i]
        poses[i, 3, 3] = 1.0
    angles = np.column_stack([yp[:, 0], np.clip(yp[:, 1], -0.7, 0.3), roll])
    return CameraPath(t_sec, pos, angles, poses)


REVISIT_TURN = 1.2  # rad: the largest change of view direction between two waypoints of a revisit walk


def _revisit_path(scene: Scene, frames: int, seed: int) -> CameraPath:
    """A walk out through random free waypoints (as ``make_path``'s) and back through the same waypoints in
    reverse to where it started, so the way back sees what the way out saw. At every waypoint the camera looks
    through the room's centre at a point 1.5 m beyond it, 0.8 m high (so it looks slightly down at the floor
    and the furniture rather than at a near bare wall, where the trackers fail), with the same view on the way
    out and on the way back; between waypoints the view turns by at most ``REVISIT_TURN``. Out and back are
    mirror images in time: the camera slows to a stop at the far waypoint and walks back facing the same way."""

    rng = np.random.default_rng([seed, 4])  # a stream of its own: ordinary walks draw from [seed, 1]
    W, D, H = scene.room_size
    free, soft = _floor_grids(scene)
    speed = rng.uniform(0.25, 0.4)
    out = _waypoints(rng, np.argwhere(free), soft, 0.5 * frames * speed / FPS)
    z = rng.uniform(1.2, 1.7, len(out))
    P_out = np.column_stack([np.array(out), z])
    centre = np.array([W / 2, D / 2, 0.8])
    yaws, pitches = [], []
    for k, p in enumerate(P_out):
        away = p[:2] - centre[:2]
        if np.linalg.norm(away) < 0.1:  # at the centre: look along the walk
            nxt = P_out[min(k + 1, len(P_out) - 1)] - P_out[max(k - 1, 0)]
            away = -nxt[:2] / max(np.linalg.norm(nxt[:2]), 1e-9)
        target = centre - 1.5 * np.append(away / np.linalg.norm(away), 0.0)
        v = target - p
        yaws.append(_turn(yaws, math.atan2(v[1], v[0]), REVISIT_TURN))
        pitches.append(float(np.clip(math.atan2(v[2], np.linalg.norm(v[:2])), -0.6, 0.0)))
    back = slice(len(P_out) - 2, None, -1)
    P = np.vstack([P_out, P_out[back]])
    angles = np.column_stack([yaws + yaws[back], pitches + pitches[back]])
    return _sample_path(scene, rng, P, angles, frames, None)


class CameraPath:
    """The camera's path as a smooth function of time: C2 cubic splines (not-a-knot) in time through the frame
    positions and the frames' yaw, pitch and roll, so it passes through every frame pose (``frame_poses``, built
    exactly as the renderer's poses) and has analytic velocity and acceleration between them. Interpolating the
    clipped frame samples rounds off the clipping of positions near the walls, where the generator's walk has a
    kink, and the arc-length resampling's piecewise-linear steps."""

    def __init__(self, times: np.ndarray, positions: np.ndarray, angles: np.ndarray, frame_poses: np.ndarray):
        from scipy.interpolate import CubicSpline

        self.times, self.frame_poses = times, frame_poses
        if len(times) >= 2:
            self._pos, self._ang = CubicSpline(times, positions), CubicSpline(times, angles)
        else:  # one frame: the camera stands still
            self._pos = self._ang = None
        self._p0, self._a0 = positions[0], angles[0]

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def positions(self, t: np.ndarray, derivative: int = 0) -> np.ndarray:
        """(N, 3) camera positions in the world (or their ``derivative``-th time derivative)."""
        t = np.asarray(t, np.float64)
        if self._pos is None:
            return np.broadcast_to(self._p0 if derivative == 0 else np.zeros(3), (len(t), 3)).copy()
        return self._pos(t, derivative)

    def rotations(self, t: np.ndarray) -> np.ndarray:
        """(N, 3, 3) camera-to-world rotations (OpenCV camera axes)."""
        t = np.asarray(t, np.float64)
        a = np.broadcast_to(self._a0, (len(t), 3)) if self._ang is None else self._ang(t)
        return _look_rotations(a[:, 0], a[:, 1], a[:, 2])

    def poses(self, t: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses at times ``t`` (seconds)."""
        out = np.zeros((len(t), 4, 4))
        out[:, :3, :3], out[:, :3, 3], out[:, 3, 3] = self.rotations(t), self.positions(t), 1.0
        return out

    def imu(self, noise=None, seed: int = 0, rate_hz: float = IMU_RATE_HZ, body_T_cam=None, gravity: float = GRAVITY):
        """What an IMU rigidly attached to the camera (``body_T_cam``: the camera's pose in the IMU frame, identity
        by default) measures along the path, sampled at ``rate_hz`` from t = 0 to the last frame: gyro (rad/s) and
        specific force (m/s^2, gravity (0, 0, -``gravity``) in the z-up world) in the IMU frame. With ``noise``
        (a ``mapping.imu.ImuNoise``) it adds white noise and a bias random walk starting at zero, drawn from
        ``numpy.random.default_rng([seed, 3])`` (a stream of its own: frames and images do not change)."""
        from mapping.imu import ImuSamples

        T_bc = np.eye(4) if body_T_cam is None else np.asarray(body_T_cam, np.float64)
        R_bc = T_bc[:3, :3]
        lever = -R_bc.T @ T_bc[:3, 3]  # the IMU's origin in camera coordinates
        n = int(math.floor(self.duration * rate_hz + 1e-9)) + 1
        t = np.arange(n) / rate_hz
        h = 1e-4  # central differences of the rotation spline: truncation ~h^2, round-off ~1e-16/h^2
        R, Rm, Rp = self.rotations(t), self.rotations(t - h), self.rotations(t + h)
        # body angular velocity: log(R(t-h)^T R(t+h)) / 2h, here from the skew part (|angle| << 1)
        dR = np.einsum("nji,njk->nik", Rm, Rp)
        w_cam = np.stack([dR[:, 2, 1] - dR[:, 1, 2], dR[:, 0, 2] - dR[:, 2, 0], dR[:, 1, 0] - dR[:, 0, 1]], 1) / (4 * h)
        acc = self.positions(t, 2)  # the camera's acceleration, world frame
        if np.any(lever):
            acc = acc + (Rp - 2 * R + Rm) @ lever / h ** 2
        acc[:, 2] += gravity  # specific force: a - g_world with g_world = (0, 0, -gravity)
        gyro = w_cam @ R_bc.T
        accel = np.einsum("nji,nj->ni", R, acc) @ R_bc.T
        if noise is not None:
            rng = np.random.default_rng([seed, 3])
            dt = 1.0 / rate_hz
            gyro = gyro + rng.standard_normal((n, 3)) * noise.gyro_noise_density * math.sqrt(rate_hz)
            accel = accel + rng.standard_normal((n, 3)) * noise.accel_noise_density * math.sqrt(rate_hz)
            gyro = gyro + np.cumsum(rng.standard_normal((n, 3)), 0) * noise.gyro_bias_walk * math.sqrt(dt)
            accel = accel + np.cumsum(rng.standard_normal((n, 3)), 0) * noise.accel_bias_walk * math.sqrt(dt)
        return ImuSamples(t, gyro, accel, T_bc)


def _look_rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """``_look_rotation`` for arrays of angles: (N, 3, 3)."""
    f = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], 1)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    dn = np.cross(f, r)
    c, s, z, o = np.cos(roll), np.sin(roll), np.zeros_like(roll), np.ones_like(roll)
    Rz = np.stack([np.stack([c, -s, z], 1), np.stack([s, c, z], 1), np.stack([z, z, o], 1)], 1)
    return np.stack([r, dn, f], axis=2) @ Rz


def wall_views(scene: Scene, count: int, seed: int) -> np.ndarray:
    """(count, 4, 4) camera-to-world poses 0.4-1.5 m from a wall and facing it (yaw within 29 deg, pitch -32 to +6
    deg), from 1.0-1.8 m high, half of them at a window, door, picture or curtain: views with little or no floor in
    sight, which the walkthroughs rarely hold and where the demo model's depth fails most (benchmarks/RESULTS.md,
    issue 23). For training variety only: ``make_trajectory``, and so every evaluation room, is unchanged. A pose is
    kept only if 26 rays from the camera run 0.25 m free (not inside or against furniture) and the view's centre
    is 0.4 m or more away; fewer than ``count`` come back if 60 tries a view do not find them."""
    import open3d as o3d

    rng = np.random.default_rng([seed, 3])
    W, D, H = scene.room_size
    rs = scene.raycasting_scene()
    probe = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)],
                     np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    # points on the wall's fittings: pictures and curtains (objects), windows and doors (structure: triangles)
    fittings = [o.center for o in scene.objects if o.name in ("picture", "curtain")]
    for cls in ("window", "door"):
        tris = scene.triangles[scene.triangle_class == scene.label_space.names.index(cls)]
        fittings += list(scene.vertices[tris].mean(axis=1))
    poses: list[np.ndarray] = []
    for _ in range(60 * count):
        if len(poses) == count:
            break
        if fittings and rng.random() < 0.5:
            target = fittings[rng.integers(len(fittings))]
        else:
            wall = int(rng.integers(4))
            along = rng.uniform(0.3, (W if wall % 2 == 0 else D) - 0.3)
            target = np.array({0: (along, 0.0), 1: (W, along), 2: (along, D), 3: (0.0, along)}[wall] + (1.4,))
        # the wall nearest the target, and its inward normal
        gaps = np.array([target[1], W - target[0], D - target[1], target[0]])
        wall = int(np.argmin(gaps))
        inward = np.array([(0, 1), (-1, 0), (0, -1), (1, 0)][wall], float)
        on = target[:2] - inward * gaps[wall]
        cam_xy = on + inward * rng.uniform(0.4, 1.5) + np.array([-inward[1], inward[0]]) * rng.uniform(-0.4, 0.4)
        cam = np.array([*cam_xy, rng.uniform(1.0, min(1.8, H - 0.3))])
        if not (0.25 < cam[0] < W - 0.25 and 0.25 < cam[1] < D - 0.25):
            continue
        yaw = math.atan2(-inward[1], -inward[0]) + rng.uniform(-0.5, 0.5)
        R = _look_rotation(yaw, rng.uniform(-0.55, 0.1), rng.normal(0.0, 0.02))
        rays = np.concatenate([np.repeat(cam[None], len(probe) + 1, 0), np.vstack([probe, R[:, 2]])],
                              1).astype(np.float32)
        t_hit = rs.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        if t_hit[:-1].min() < 0.25 or t_hit[-1] < 0.4:  # inside or against furniture, or facing it point-blank
            continue
        pose = np.eye(4)
        pose[:3, :3] = R
        pose[:3, 3] = cam
        poses.append(pose)
    return np.array(poses).reshape(-1, 4, 4)


# --------------------------------------------------------------------------------------------
# Rendering

def _matmul3(v: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(N, 3) @ (3, 3) without BLAS (whose thread start-up dominates for this shape)."""
    return v[:, 0:1] * M[0] + v[:, 1:2] * M[1] + v[:, 2:3] * M[2]


class Renderer:
    """Casts one ray per pixel into the scene and shades the hits (float32 numpy throughout)."""

    def __init__(self, scene: Scene, K: np.ndarray, height: int, width: int):
        import open3d as o3d

        self.o3d = o3d
        self.scene, self.K, self.h, self.w = scene, K, height, width
        self.rs = scene.raycasting_scene()
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        # camera-frame ray directions with z = 1, so t_hit is the z-depth
        self.dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)],
                                 -1).reshape(-1, 3).astype(np.float32)
        yy, xx = (v - (height - 1) / 2) / height, (u - (width - 1) / 2) / width
        self.vignette = (1.0 - 0.7 * (xx ** 2 + yy ** 2)).reshape(-1, 1).astype(np.float32)
        tri = scene.vertices[scene.triangles]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.tri_normals = (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)
        m = scene.materials
        self.mat_base = m["base"].astype(np.float32)
        self.mat_second = m["second"].astype(np.float32)
        self.rays = np.empty((height * width, 6), np.float32)

    def render(self, pose: np.ndarray, index: int, timestamp: float) -> Frame:
        sc, h, w = self.scene, self.h, self.w
        R, t = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
        dirs = _matmul3(self.dirs_cam, R.T)
        self.rays[:, :3] = t
        self.rays[:, 3:] = dirs
        ans = self.rs.cast_rays(self.o3d.core.Tensor.from_numpy(self.rays))
        t_hit = ans["t_hit"].numpy()
        prim = ans["primitive_ids"].numpy()
        hit = np.isfinite(t_hit) & (prim != self.rs.INVALID_ID)
        prim = np.where(hit, prim, 0).astype(np.int64)
        depth = np.where(hit, t_hit, 0).astype(np.float32)

        labels = np.where(hit, sc.triangle_class[prim], CEILING).astype(np.uint8)
        n_world = self.tri_normals[prim]
        facing = np.einsum("ij,ij->i", n_world, dirs) > 0
        n_world[facing] *= -1
        n_cam = _matmul3(n_world, R)
        n_cam[~hit] = 0

        # shading: albedo x (ambient + Lambertian point lights with soft falloff) x vignetting + noise
        X = t + dirs * depth[:, None]
        mat = sc.triangle_material[prim]
        albedo = self._albedo(X, n_world, mat)
        light = np.full((len(X), 3), 0.35, np.float32)
        for lp, lc in zip(sc.lights.astype(np.float32), sc.light_colors.astype(np.float32)):
            L = lp - X
            d2 = np.einsum("ij,ij->i", L, L)
            lam = np.maximum(np.einsum("ij,ij->i", n_world, L), 0) / np.sqrt(np.maximum(d2, 1e-12))
            light += (0.75 * lam / (1.0 + 0.08 * d2))[:, None] * lc
        rgb = albedo * light
        rgb *= self.vignette * 255.0
        noise_rng = np.random.default_rng([sc.seed, 2, index])
        rgb += noise_rng.standard_normal(rgb.shape, dtype=np.float32) * 1.5
        rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 3)

        labels = labels.reshape(h, w)
        return Frame(
            rgb=rgb, K=self.K.copy(), timestamp=timestamp, index=index,
            depth=depth.reshape(h, w), labels=labels, pose=pose.copy(),
            normals=n_cam.reshape(h, w, 3), edges=semantic_edges(labels),
        )

    def _albedo(self, X, n_world, mat):
        m = self.scene.materials
        axis = np.argmax(np.abs(n_world), axis=1)  # planar texture coordinates on the dominant face plane
        a = np.where(axis == 0, X[:, 1], X[:, 0])
        b = np.where(axis == 2, X[:, 1], X[:, 2])
        pattern = m["pattern"][mat]
        tex = self.scene.noise_texture
        mix = np.zeros(len(X), np.float32)
        for pat in (WOOD, STRIPES, TILES, NOISE, PLAIN):
            idx = np.flatnonzero(pattern == pat)
            if not len(idx):
                continue
            mi = mat[idx]
            fa, fb, off = a[idx], b[idx], m["offset"][mi].astype(np.float32)
            freq = m["freq"][mi].astype(np.float32)
            if pat == WOOD:
                nz = self._noise(fa * 2 + off[:, 0], fb * 8 + off[:, 1], tex)
                mix[idx] = 0.5 + 0.5 * np.sin(2 * np.pi * (fa * freq + 3.0 * nz))
            elif pat == STRIPES:
                mix[idx] = np.floor(fa * freq + off[:, 0]) % 2
            elif pat == TILES:
                ua, ub = (fa * freq) % 1.0, (fb * freq) % 1.0
                grout = (np.minimum(ua, 1 - ua) < 0.03) | (np.minimum(ub, 1 - ub) < 0.03)
                mix[idx] = np.where(grout, 1.0, 0.15 * self._noise(fa * 10 + off[:, 0], fb * 10, tex))
            elif pat == NOISE:
                mix[idx] = self._noise(fa * freq + off[:, 0], fb * freq + off[:, 1], tex)
            else:
                mix[idx] = 0.2 * self._noise(fa * 3 + off[:, 0], fb * 3 + off[:, 1], tex)
        mix = mix[:, None]
        return self.mat_base[mat] * (1 - mix) + self.mat_second[mat] * mix

    @staticmethod
    def _noise(a, b, tex):
        """Bilinear lookup in the tiling 64x64 value-noise texture."""
        n = tex.shape[0]
        a, b = np.mod(a, n), np.mod(b, n)
        i0, j0 = a.astype(np.int32), b.astype(np.int32)
        fa, fb = a - i0, b - j0
        i1, j1 = (i0 + 1) % n, (j0 + 1) % n
        i0, j0 = i0 % n, j0 % n
        top = tex[i0, j0] + (tex[i1, j0] - tex[i0, j0]) * fa
        bot = tex[i0, j1] + (tex[i1, j1] - tex[i0, j1]) * fa
        return top + (bot - top) * fb


class SyntheticSource:
    """A FrameSource that renders a seeded room walkthrough on the fly, with all ground truth."""

    def __init__(self, seed: int = 0, frames: int = 300, height: int = 240, width: int = 320, revisit: bool = False):
        if frames < 1 or height < 8 or width < 8:
            raise ValueError("frames must be >= 1 and the image at least 8x8")
        self.seed, self.num_frames, self.height, self.width = seed, frames, height, width
        self.scene = make_scene(seed)
        self.K = default_intrinsics(height, width)
        self.path = make_path(self.scene, frames, seed, revisit=revisit)
        self.poses = self.path.frame_poses
        self.imu = self.path.imu(D435I, seed=seed)  # the whole stream; each frame carries its slice
        self.name = f"synthetic-{seed}" + ("-revisit" if revisit else "")
        self.label_space = self.scene.label_space
        self._renderer: Renderer | None = None

    def __len__(self) -> int:
        return self.num_frames

    @property
    def timestamps(self) -> np.ndarray:
        """Every frame's time (s), known without rendering it (``app.sources.RealtimePlayback`` skips by it)."""
        return np.arange(self.num_frames) / FPS

    def __getitem__(self, i: int) -> Frame:
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(i)
        i %= self.num_frames
        frame = self.view(self.poses[i], i)
        frame.imu = self.imu.between((i - 1) / FPS if i else -math.inf, frame.timestamp)
        return frame

    def view(self, pose: np.ndarray, index: int) -> Frame:
        """The room seen from any camera-to-world ``pose`` (e.g. ``wall_views``), as frame ``index`` (no IMU)."""
        if self._renderer is None:
            self._renderer = Renderer(self.scene, self.K, self.height, self.width)
        return self._renderer.render(pose, index, index / FPS)

    def __iter__(self):
        for i in range(self.num_frames):
            yield self[i]

    def visible_objects(self, poses: np.ndarray, min_fraction: float = 0.02, step: int = 4) -> list[SceneObject]:
        """The room's objects that fill at least ``min_fraction`` of some view among the camera-to-world ``poses``
        (one ray every ``step`` pixels), each boxed to the part of its surface those views saw: the ground truth
        that a map of those views can be scored against."""
        renderer = self._renderer or Renderer(self.scene, self.K, self.height, self.width)
        grid = renderer.dirs_cam.reshape(self.height, self.width, 3)
        dirs_cam = grid[step // 2::step, step // 2::step].reshape(-1, 3)
        rays = np.empty((len(dirs_cam), 6), np.float32)
        n = len(self.scene.objects)
        best = np.zeros(n)
        lo, hi = np.full((n, 3), np.inf), np.full((n, 3), -np.inf)
        for pose in poses:
            rays[:, :3] = pose[:3, 3]
            rays[:, 3:] = _matmul3(dirs_cam, pose[:3, :3].T.astype(np.float32))
            ans = renderer.rs.cast_rays(renderer.o3d.core.Tensor.from_numpy(rays))
            prim, t_hit = ans["primitive_ids"].numpy(), ans["t_hit"].numpy()
            hit = prim != renderer.rs.INVALID_ID
            obj = np.full(len(rays), -1)
            obj[hit] = self.scene.triangle_object[prim[hit]]
            best = np.maximum(best, np.bincount(obj[obj >= 0], minlength=n) / len(rays))
            for k in np.unique(obj[obj >= 0]):
                sel = obj == k
                points = rays[sel, :3] + rays[sel, 3:] * t_hit[sel, None]
                lo[k], hi[k] = np.minimum(lo[k], points.min(0)), np.maximum(hi[k], points.max(0))
        return [SceneObject(o.class_id, o.name, lo[k], hi[k]) for k, o in enumerate(self.scene.objects)
                if best[k] > 0 and best[k] >= min_fraction]

    @property
    def holds_renderer(self) -> bool:
        """Whether a ray caster is alive (made by the first render, freed by ``close``)."""
        return self._renderer is not None

    def close(self) -> None:
        self._renderer = None


# --------------------------------------------------------------------------------------------
# Writing the ScanNet export layout

def _encode(ext: str, img: np.ndarray, params=()) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, img, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def _mat_text(M: np.ndarray) -> str:
    return "\n".join(" ".join(repr(float(x)) for x in row) for row in M) + "\n"


def write_scene(out_dir, seed: int = 0, frames: int = 300, height: int = 240, width: int = 320,
                progress: bool = True, revisit: bool = False) -> Path:
    """Render a walkthrough and write it in the ScanNet export layout; returns the folder.

    Layout: ``color/N.jpg`` (JPEG quality 95), ``depth/N.png`` (uint16 mm), ``label/N.png`` (uint8
    ScanNet-20 train ids, 255 = ignore), ``normal/N.png`` (uint16 RGB = x, y, z camera-frame normal,
    value = round((n + 1) / 2 * 65535), 0 = unknown), ``pose/N.txt`` (4x4 camera-to-world),
    ``intrinsic/{intrinsic,extrinsic}_{color,depth}.txt`` (4x4), ``groundtruth.txt`` (TUM format,
    t = N / 30 s), ``scene.json`` (seed, label space, image size, room size, furniture with AABBs) and the IMU in
    EuRoC's layout: ``imu0/data.csv`` (ns, gyro rad/s, accel m/s^2), ``imu0/sensor.yaml`` (noise figures) and
    ``cam0/sensor.yaml`` (``T_BS``: the camera in the IMU frame, identity).
    """
    import cv2
    from scipy.spatial.transform import Rotation
    from tqdm import tqdm

    out = Path(out_dir)
    src = SyntheticSource(seed=seed, frames=frames, height=height, width=width, revisit=revisit)
    for sub in ("color", "depth", "label", "normal", "pose", "intrinsic"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    K4 = np.eye(4)
    K4[:3, :3] = src.K
    for name, M in (("intrinsic_color", K4), ("intrinsic_depth", K4), ("extrinsic_color", np.eye(4)),
                    ("extrinsic_depth", np.eye(4))):
        atomic_write_bytes(out / "intrinsic" / f"{name}.txt", _mat_text(M).encode())
    tum = ["# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV camera axes)"]

    def save(f: Frame) -> None:  # encoding and writing release the GIL: overlap them with rendering
        i = f.index
        atomic_write_bytes(out / "color" / f"{i}.jpg", _encode(".jpg", f.rgb[:, :, ::-1], (cv2.IMWRITE_JPEG_QUALITY, 95)))
        atomic_write_bytes(out / "depth" / f"{i}.png", _encode(".png", np.round(f.depth * 1000.0).astype(np.uint16)))
        atomic_write_bytes(out / "label" / f"{i}.png", _encode(".png", f.labels))
        atomic_write_bytes(out / "normal" / f"{i}.png", _encode(".png", encode_normals(f.normals)[:, :, ::-1]))
        atomic_write_bytes(out / "pose" / f"{i}.txt", _mat_text(f.pose).encode())

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        for f in tqdm(src, total=frames, desc=f"synth seed {seed}", unit="frame", disable=not progress):
            pending.append(pool.submit(save, f))
            if len(pending) > 4:
                pending.pop(0).result()
            q = Rotation.from_matrix(f.pose[:3, :3]).as_quat()
            tum.append(f"{f.timestamp:.6f} " + " ".join(f"{x:.9f}" for x in (*f.pose[:3, 3], *q)))
        for fut in pending:
            fut.result()
    atomic_write_bytes(out / "groundtruth.txt", ("\n".join(tum) + "\n").encode())
    write_euroc_csv(out / "imu0" / "data.csv", src.imu, D435I)
    sc = src.scene
    meta = {
        "generator": "m2hmx.data.synthetic",
        "seed": seed, "frames": frames, "height": height, "width": width, "fps": FPS,
        "label_space": sc.label_space.name,
        "room_size": [float(x) for x in sc.room_size],
        "num_triangles": int(len(sc.triangles)),
        "objects": [{"class_id": o.class_id, "name": o.name, "aabb_min": [float(x) for x in o.aabb_min],
                     "aabb_max": [float(x) for x in o.aabb_max]} for o in sc.objects],
    }
    atomic_write_bytes(out / "scene.json", (json.dumps(meta, indent=1) + "\n").encode())
    return out
