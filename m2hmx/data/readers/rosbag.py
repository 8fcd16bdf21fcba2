"""ROS 2 bags (a rosbag2 folder with ``metadata.yaml``, MCAP or sqlite3 storage) as a frame source, read with
``rosbags`` (pure Python, no ROS; the ``ros`` extra).

Topics are found by name first (``m2hmx.data.ros.TOPICS``, what ``m2hmx-map --rosbag`` writes), else by
type and encoding: colour is a ``sensor_msgs/Image`` in ``rgb8``/``bgr8``/``rgba8``/``bgra8`` or a
``sensor_msgs/CompressedImage``; depth an Image in ``32FC1`` (metres) or ``16UC1`` (millimetres, REP 118);
labels an Image in ``mono8``/``mono16`` whose topic name mentions labels or segmentation. Depth and labels
are matched to colour by header stamp (nearest within 20 ms, as TUM's associate does). Intrinsics come from
the first ``sensor_msgs/CameraInfo`` whose size matches the colour images. Poses come from TF: the chain from
the tree's root to the colour image's ``frame_id`` (REP 103: an optical frame, so the pose is in OpenCV camera
axes), dynamic links interpolated at the image's stamp. A label space (``labelspace.yaml``) beside or inside
the bag is matched to a bundled one by class names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from m2hmx.data.errors import DatasetError
from m2hmx.data.frame import Frame
from m2hmx.data.ros import TOPICS, transform_matrix

MISSING = "reading ROS 2 bags needs rosbags: pip install 'm2hmx[ros]'"
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
DEPTH_ENCODINGS = ("32FC1", "16UC1")
LABEL_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1")
MAX_DT = 0.02


def is_rosbag(path: Path) -> bool:
    return (Path(path) / "metadata.yaml").is_file()


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def decode_image(msg, path) -> np.ndarray:
    """sensor_msgs/Image -> (H, W[, C]) array: RGB uint8, float32 metres (depth) or integer ids."""
    enc = msg.encoding
    dtypes = {"rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
              "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
              "32FC1": (np.float32, 1)}
    if enc not in dtypes:
        raise DatasetError(path, f"unsupported image encoding '{enc}'")
    dtype, ch = dtypes[enc]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), np.uint8).reshape(msg.height, msg.step)
    img = row[:, : msg.width * ch * dtype.itemsize].copy().view(dtype).reshape(msg.height, msg.width, ch)
    img = img.astype(dtype.newbyteorder("="))
    if ch == 1:
        return img[:, :, 0]
    if enc.startswith("bgr"):
        img = img[:, :, 2::-1]
    return np.ascontiguousarray(img[:, :, :3])


class TFTree:
    """Static and time-stamped transforms (parent -> child) with a chain lookup."""

    def __init__(self):
        self.static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, parent_T_child)
        self.dynamic: dict[str, tuple[str, list[float], list[np.ndarray]]] = {}

    def add(self, msg, static: bool) -> None:
        for tr in msg.transforms:
            t, q = tr.transform.translation, tr.transform.rotation
            T = transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
            parent, child = tr.header.frame_id.lstrip("/"), tr.child_frame_id.lstrip("/")
            if static:
                self.static[child] = (parent, T)
            else:
                entry = self.dynamic.setdefault(child, (parent, [], []))
                entry[1].append(_stamp(tr.header))
                entry[2].append(T)

    def frames(self) -> set[str]:
        return {c for c in self.static} | {c for c in self.dynamic} | {p for p, _ in self.static.values()} \
            | {p for p, *_ in self.dynamic.values()}

    def _dynamic_at(self, child: str, t: float, max_gap: float) -> np.ndarray | None:
        from scipy.spatial.transform import Rotation, Slerp

        _, times, mats = self.dynamic[child]
        times = np.asarray(times)
        order = np.argsort(times)
        times = times[order]
        j = int(np.searchsorted(times, t))
        if j < len(times) and abs(times[j] - t) < 1e-6:
            return mats[order[j]]
        if j == 0 or j == len(times):  # outside the recorded span: the nearest within max_gap
            k = 0 if j == 0 else len(times) - 1
            return mats[order[k]] if abs(times[k] - t) <= max_gap else None
        a, b = mats[order[j - 1]], mats[order[j]]
        t0, t1 = times[j - 1], times[j]
        if t1 - t0 > max_gap * 10:
            return None
        w = (t - t0) / (t1 - t0)
        rot = Slerp([0, 1], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))([w]).as_matrix()[0]
        T = np.eye(4)
        T[:3, :3] = rot
        T[:3, 3] = (1 - w) * a[:3, 3] + w * b[:3, 3]
        return T

    def lookup(self, frame: str, t: float, max_gap: float = 0.1) -> tuple[str, np.ndarray] | None:
        """(root frame, root_T_frame) at time ``t``, or None when a dynamic link has no data near ``t``."""
        T = np.eye(4)
        frame = frame.lstrip("/")
        seen = set()
        while frame in self.static or frame in self.dynamic:
            if frame in seen:  # a cycle: malformed TF
                return None
            seen.add(frame)
            if frame in self.static:
                parent, link = self.static[frame]
            else:
                parent = self.dynamic[frame][0]
                link = self._dynamic_at(frame, t, max_gap)
                if link is None:
                    return None
            T = link @ T
            frame = parent
        return (frame, T) if seen else None


def _found(connections) -> str:
    return ", ".join(f"{c.topic} ({c.msgtype.replace('/msg/', '/')})" for c in connections) or "no topics"


class RosbagSource:
    """Frames of a ROS 2 bag (see the module docstring). Reads the bag twice: once for the small messages
    (camera info, TF) and header stamps, then frame by frame while iterating."""

    def __init__(self, path):
        try:
            from rosbags.highlevel import AnyReader
        except ImportError:
            raise DatasetError(path, MISSING) from None
        self.path = path = Path(path)
        self.name = path.name
        self.label_space = self._label_space()
        self._encodings: dict[str, str | None] = {}
        try:
            self.reader = AnyReader([path])
            self.reader.open()
        except Exception as exc:  # rosbags' own errors: a broken metadata.yaml or storage file
            raise DatasetError(path, f"cannot open ROS 2 bag ({str(exc).strip().splitlines()[0]})") from None
        conns = self.reader.connections
        self.color = self._pick(conns, "rgb", self._is_color)
        if self.color is None:
            message = (f"no colour image topic (sensor_msgs/Image {'/'.join(COLOR_ENCODINGS)} or CompressedImage); "
                       f"found: {_found(conns)}")
            self.close()
            raise DatasetError(path, message)
        self.depth = self._pick(conns, "depth", lambda c: self._encoding(c) in DEPTH_ENCODINGS)
        self.labels = self._pick(conns, "labels", lambda c: self._encoding(c) in LABEL_ENCODINGS
                                 and any(k in c.topic.lower() for k in ("label", "seg", "semantic", "class")))
        self._index(conns)

    def _label_space(self):
        from m2hmx.labels import load_label_space

        for folder in (self.path, self.path.parent):
            f = folder / "labelspace.yaml"
            if f.is_file():
                import yaml

                try:
                    names = [d["name"] for d in yaml.safe_load(f.read_text())["label_names"]]
                except Exception:
                    return None
                for known in ("scannet20", "nyu40"):
                    space = load_label_space(known)
                    if list(space.names) == names:
                        return space
        return None

    # ------------------------------------------------------------------ topic discovery
    def _encoding(self, conn) -> str | None:
        """The encoding of a topic's first Image message (None for other types)."""
        if conn.msgtype != "sensor_msgs/msg/Image":
            return None
        if conn.topic not in self._encodings:
            enc = None
            for c, _, raw in self.reader.messages(connections=[conn]):
                enc = self.reader.deserialize(raw, c.msgtype).encoding
                break
            self._encodings[conn.topic] = enc
        return self._encodings[conn.topic]

    def _is_color(self, conn) -> bool:
        return conn.msgtype == "sensor_msgs/msg/CompressedImage" or self._encoding(conn) in COLOR_ENCODINGS

    def _pick(self, conns, kind: str, test):
        named = [c for c in conns if c.topic == TOPICS[kind]]
        candidates = named or [c for c in conns if test(c)]
        if named and not test(named[0]):
            candidates = [c for c in conns if test(c)]
        return candidates[0] if candidates else None

    def _index(self, conns) -> None:
        from m2hmx.data.readers.tum import associate

        self.tf = TFTree()
        stamps: dict[str, list[tuple[float, int]]] = {"color": [], "depth": [], "labels": []}
        roles = {id(self.color): "color"}
        for role in ("depth", "labels"):
            if getattr(self, role) is not None:
                roles[id(getattr(self, role))] = role
        infos = [c for c in conns if c.msgtype == "sensor_msgs/msg/CameraInfo"]
        tfs = [c for c in conns if c.msgtype == "tf2_msgs/msg/TFMessage"]
        wanted = [self.color] + [c for c in (self.depth, self.labels) if c is not None] + infos + tfs
        self.K, self._frame_id, self._infos = None, None, []
        try:
            for conn, log_t, raw in self.reader.messages(connections=wanted):
                msg = self.reader.deserialize(raw, conn.msgtype)
                if conn.msgtype == "tf2_msgs/msg/TFMessage":
                    self.tf.add(msg, static=conn.topic.endswith("tf_static"))
                elif conn.msgtype == "sensor_msgs/msg/CameraInfo":
                    if len(self._infos) < 50:
                        self._infos.append((msg.height, msg.width, np.asarray(msg.k, np.float64).reshape(3, 3)))
                else:
                    role = roles[id(conn)]
                    stamps[role].append((_stamp(msg.header), log_t))
                    if role == "color" and self._frame_id is None:
                        self._frame_id = msg.header.frame_id
        except Exception as exc:
            raise DatasetError(self.path, f"cannot read the bag ({str(exc).strip().splitlines()[0]})") from None
        color = stamps["color"]
        if not color:
            raise DatasetError(self.path, f"colour topic {self.color.topic} has no messages")
        t_color = np.array([s for s, _ in color])
        self._items = []  # (stamp, {role: log time})
        matches = {}
        for role in ("depth", "labels"):
            if stamps[role]:
                t_other = np.array([s for s, _ in stamps[role]])
                matches[role] = dict(associate(t_color, t_other, MAX_DT))
        for i, (t, log_t) in enumerate(color):
            need = {"color": log_t}
            for role, m in matches.items():
                if i in m:
                    need[role] = stamps[role][m[i]][1]
            self._items.append((t, need))

    # ------------------------------------------------------------------ frames
    def __len__(self) -> int:
        return len(self._items)

    @property
    def num_frames(self) -> int:
        return len(self._items)

    def _intrinsics(self, height: int, width: int) -> np.ndarray:
        if self.K is None:
            for h, w, K in self._infos:
                if (h, w) == (height, width):
                    self.K = K
                    break
            else:
                if self._infos:
                    found = ", ".join(sorted({f"{w}x{h}" for h, w, _ in self._infos}))
                    raise DatasetError(self.path, f"no sensor_msgs/CameraInfo for {width}x{height} images "
                                       f"(found {found})")
                from m2hmx.data.readers._common import default_intrinsics_fov

                self.K = default_intrinsics_fov(height, width)  # no calibration: as for a webcam
        return self.K

    def _decode(self, conn, raw, role: str) -> np.ndarray:
        msg = self.reader.deserialize(raw, conn.msgtype)
        if conn.msgtype == "sensor_msgs/msg/CompressedImage":
            import cv2

            img = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(self.path, f"{conn.topic}: cannot decode a compressed image")
            return np.ascontiguousarray(img[:, :, ::-1])
        img = decode_image(msg, f"{self.path}:{conn.topic}")
        if role == "depth":
            img = img.astype(np.float32) / (1000.0 if img.dtype == np.uint16 else 1.0)
            img[~np.isfinite(img)] = 0
        elif role == "labels" and img.dtype != np.uint8:
            img = np.where(img > 255, 255, img).astype(np.uint8)
        return img

    def __iter__(self):
        by_log: dict[tuple[str, int], int] = {}
        for i, (_, need) in enumerate(self._items):
            for role, log_t in need.items():
                by_log[(role, log_t)] = i
        conns = {"color": self.color, "depth": self.depth, "labels": self.labels}
        role_of = {id(c): r for r, c in conns.items() if c is not None}
        pending: dict[int, dict[str, np.ndarray]] = {}
        next_i = 0
        for conn, log_t, raw in self.reader.messages(connections=[c for c in conns.values() if c is not None]):
            role = role_of[id(conn)]
            i = by_log.get((role, log_t))
            if i is None:
                continue
            pending.setdefault(i, {})[role] = self._decode(conn, raw, role)
            while next_i < len(self._items) and set(self._items[next_i][1]) <= set(pending.get(next_i, {})):
                yield self._frame(next_i, pending.pop(next_i))
                next_i += 1
        for i in sorted(k for k in pending if k >= next_i and "color" in pending[k]):  # partners never came
            yield self._frame(i, pending[i])

    def _frame(self, i: int, images: dict) -> Frame:
        t = self._items[i][0]
        rgb = images["color"]
        K = self._intrinsics(*rgb.shape[:2])
        depth, labels = images.get("depth"), images.get("labels")
        for name, img in (("depth", depth), ("labels", labels)):
            if img is not None and img.shape != rgb.shape[:2]:
                raise DatasetError(self.path, f"{name} is {img.shape[1]}x{img.shape[0]} but colour is "
                                   f"{rgb.shape[1]}x{rgb.shape[0]}")
        found = self.tf.lookup(self._frame_id or "", t)
        return Frame(rgb=rgb, K=K.copy(), timestamp=t, index=i, depth=depth, labels=labels,
                     pose=None if found is None else found[1])

    def close(self) -> None:
        reader = getattr(self, "reader", None)
        if reader is not None:
            try:
                reader.close()
            except Exception:
                pass
            self.reader = None
