"""Perception -> mapping glue: turn a source's ``Frame`` (+ a network ``Prediction``) into a
``PerceptionFrame`` and run a whole sequence through a ``MappingBridge``."""
from __future__ import annotations

import numpy as np

from mapping.imu import carry_over
from mapping.interface import DEPTH_MODES, IGNORE_LABEL, InterfaceError, PerceptionFrame

# --odometry choices of m2hmx-map and m2hmx-viewer: mapping.odometry.ODOMETRY_MODES (sparse) and the keys of
# mapping.tracking.ODOMETRY_METHODS (dense), named here so that building a parser does not import Open3D or GTSAM
ODOMETRY_CHOICES = ("point_to_plane", "hybrid", "intensity", "vio", "vo")
NETWORK_TASKS = ("semseg", "depth", "normals", "edge")  # m2hmx.config.TASKS, named here without importing torch


def parse_tasks(text: str) -> tuple[str, ...]:
    """``--tasks depth,semseg[,normals,edge]`` -> the network outputs to predict (ValueError naming the problem:
    argparse prints it as one line)."""
    tasks = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in tasks if t not in NETWORK_TASKS]
    if unknown or not {"depth", "semseg"} <= set(tasks):
        raise ValueError(f"'{text}': a comma list of {', '.join(NETWORK_TASKS)} that holds depth and semseg")
    return tasks


def to_perception_frame(frame, prediction=None, depth_mode: str = "sensor", num_classes: int | None = None,
                        pose_prior: bool = False) -> PerceptionFrame:
    """``sensor``/``gt``: the frame's own depth (an error if it has none); ``pred``: the network's depth.
    Labels and confidence come from the prediction when given, else from the frame's ground truth
    (unlabelled when it has none). ``pose_prior`` passes the frame's ground-truth pose along; the frame's IMU
    samples (or None) always pass through."""
    if depth_mode not in DEPTH_MODES:
        raise InterfaceError(f"depth mode must be one of {', '.join(DEPTH_MODES)}, got '{depth_mode}'")
    if depth_mode == "pred":
        if prediction is None:
            raise InterfaceError("depth mode 'pred' needs a network prediction for every frame")
        depth = prediction.depth
    else:
        if frame.depth is None:
            what = "ground-truth" if depth_mode == "gt" else "sensor"
            raise InterfaceError(f"frame {frame.index} has no {what} depth (use --depth pred)")
        depth = frame.depth
    if prediction is not None:
        labels, confidence = prediction.labels, prediction.confidence
    else:
        labels = frame.labels if frame.labels is not None else np.full(frame.size, IGNORE_LABEL, np.uint8)
        confidence = None
    return PerceptionFrame(frame.timestamp, frame.rgb, np.asarray(depth, np.float32), labels, frame.K,
                           confidence=confidence, pose_prior=frame.pose if pose_prior else None,
                           num_classes=num_classes, imu=frame.imu)


def run_mapping(source, bridge, predictor=None, depth_mode: str = "sensor", max_frames: int | None = None,
                progress: bool = True, stride: int = 1, gt_poses: bool = False, on_step=None,
                on_frame=None) -> dict:
    """Map ``source`` frame by frame. Returns {"frames", "failures", "gt": (t, poses) or None, "error": str|None}.

    The first frame's ground-truth pose (when the source has one) anchors the map in the source's world
    frame; with ``gt_poses`` every frame's ground-truth pose is used instead of tracking. With ``stride``, the IMU
    samples of skipped frames go with the next mapped one. An error on a frame, or Ctrl+C (``"interrupted"``), stops the run but keeps the map
    built so far (the caller exports it). ``on_step(step)`` and ``on_frame(frame, prediction, perception_frame,
    step)`` are called after each mapped frame."""
    from tqdm import tqdm

    from m2hmx.data.errors import DatasetError

    try:
        total = len(source)
    except TypeError:
        total = None
    if total is not None:
        total = -(-total // stride)
        if max_frames is not None:
            total = min(total, max_frames)
    num_classes = bridge.label_space.num_classes
    gt_t, gt_p, error, done, interrupted = [], [], None, 0, False
    bar = tqdm(total=total, disable=not progress, unit="frame", desc="mapping")
    skipped_imu = None  # IMU samples of frames skipped by ``stride``: they go with the next mapped frame
    try:
        for i, frame in enumerate(source):
            if i % stride:
                skipped_imu = carry_over(skipped_imu, frame.imu)
                continue
            if max_frames is not None and done >= max_frames:
                break
            frame.imu, skipped_imu = carry_over(skipped_imu, frame.imu), None
            prediction = predictor.predict(frame.rgb) if predictor is not None else None
            first = done == 0
            pf = to_perception_frame(frame, prediction, depth_mode, num_classes, pose_prior=gt_poses or first)
            if frame.pose is not None:
                gt_t.append(frame.timestamp)
                gt_p.append(frame.pose)
            step = bridge.process(pf)
            if on_step is not None:
                on_step(step)
            if on_frame is not None:
                on_frame(frame, prediction, pf, step)
            done += 1
            bar.update(1)
            bar.set_postfix(fail=bridge.failures)
    except (InterfaceError, DatasetError, ValueError, RuntimeError, OSError) as exc:
        error = f"frame {done}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    except KeyboardInterrupt:  # Ctrl+C: like a frame error, the map so far is kept for the caller to export
        error, interrupted = f"interrupted at frame {done}", True
    finally:
        bar.close()
    gt = (np.array(gt_t), np.array(gt_p)) if len(gt_p) >= 3 else None
    return {"frames": done, "failures": bridge.failures, "gt": gt, "error": error,
            "interrupted": interrupted}
