"""What the rooms where the demo model's depth fails share: room and frame features against per-room and per-frame
depth error, on validation rooms scored by ``eval_demo_model --range val --rooms-out ROOMS.jsonl``.

1. Rooms: for each room of ``ROOMS.jsonl``, features of its scene (size, kind, doors, windows, objects, wall and
   floor materials, lights) and Spearman's rank correlation of each with the room's AbsRel and scale std; the
   worst rooms listed with their features.
2. Frames (``--frames-of N``): the N worst rooms and N rooms around the median, re-run frame by frame at the sweep's
   stride: each frame's AbsRel and scale (median pred / GT) beside what the camera sees (the GT depth's median and
   10th percentile, the share of each class, the image's brightness), and the same correlations over frames.

Run: ``.venv/bin/python -m benchmarks.depth_failures --rooms ROOMS.jsonl [--frames-of 12] [--csv frames.csv]``.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from m2hmx.config import bundled_checkpoint
from m2hmx.data.synthetic import SyntheticSource, make_scene, wall_views

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["bedroom", "living", "office", "kitchen", "bathroom"]


def room_features(seed: int) -> dict:
    """Numbers describing generated room ``seed`` (no rendering)."""
    scene = make_scene(seed)
    names = scene.label_space.names
    W, D, H = scene.room_size
    area = {names[c]: 0.0 for c in range(len(names))}
    tri = scene.vertices[scene.triangles]
    tri_area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    for c in np.unique(scene.triangle_class):
        if c < len(names):
            area[names[c]] = float(tri_area[scene.triangle_class == c].sum())
    wall_mat = scene.triangle_material[scene.triangle_class == names.index("wall")][0]
    floor_mat = scene.triangle_material[scene.triangle_class == names.index("floor")][0]
    return {"W": W, "D": D, "H": H, "floor_m2": W * D, "longest_m": max(W, D), "aspect": max(W, D) / min(W, D),
            "objects": len(scene.objects), "window_m2": area["window"], "door_m2": area["door"],
            "curtain_m2": area["curtain"], "picture_m2": area["picture"],
            "wall_albedo": float(scene.materials["base"][wall_mat].mean()),
            "wall_textured": int(scene.materials["pattern"][wall_mat] != 0),
            "floor_albedo": float(scene.materials["base"][floor_mat].mean()),
            "light_height_gap": float(H - scene.lights[:, 2].mean()),
            "light_spread_m": float(np.linalg.norm(scene.lights[0, :2] - scene.lights[1, :2])),
            "light_warmth": float(scene.light_colors[:, 0].mean() - scene.light_colors[:, 2].mean()),
            "kind": KINDS.index(_kind(scene))}


def _kind(scene) -> str:
    names = {o.name for o in scene.objects} | set(scene.label_space.names[c] for c in np.unique(scene.triangle_class)
                                                   if c < scene.label_space.num_classes)
    for kind, must in [("bathroom", "toilet"), ("kitchen", "refridgerator"), ("bedroom", "bed"), ("office", "desk"),
                       ("living", "sofa")]:
        if must in names:
            return kind
    return "living"


def correlations(rows: list[dict], features: list[str], targets: list[str]) -> list[str]:
    lines = [f"{'feature':<20}" + "".join(f"{'rho ' + t:>22}" for t in targets)]
    for f in features:
        x = np.array([r[f] for r in rows], float)
        cells = []
        for t in targets:
            y = np.array([r[t] for r in rows], float)
            ok = np.isfinite(x) & np.isfinite(y)
            rho, p = spearmanr(x[ok], y[ok]) if ok.sum() > 3 and np.ptp(x[ok]) > 0 else (np.nan, np.nan)
            cells.append(f"{rho:+.2f} (p {p:.3f})")
        lines.append(f"{f:<20}" + "".join(f"{c:>22}" for c in cells))
    return lines


def frame_rows(predictor, seed: int, stride: int, names: list[str]) -> list[dict]:
    source = SyntheticSource(seed)
    rows = []
    try:
        for i in range(0, len(source), stride):
            frame = source[i]
            pred = predictor.predict(frame.rgb).depth
            gt = frame.depth
            ok = (gt > 0.1) & (gt < 10.0)
            p, g = np.clip(pred[ok], 0.1, 10.0), gt[ok]
            labels = frame.labels
            row = {"seed": seed, "frame": i, "abs_rel": float(np.mean(np.abs(p - g) / g)),
                   "scale": float(np.median(p / g)), "gt_median_m": float(np.median(g)),
                   "gt_p10_m": float(np.percentile(g, 10)), "gt_p90_m": float(np.percentile(g, 90)),
                   "pred_median_m": float(np.median(p)), "brightness": float(frame.rgb.mean()),
                   "contrast": float(frame.rgb.std()), "ceiling": float(np.mean(labels == 255))}
            for c, name in enumerate(names):
                row[name] = float(np.mean(labels == c))
            rows.append(row)
    finally:
        source.close()
    return rows


def wall_view_rows(predictor, seed: int, count: int) -> list[dict]:
    """The depth error on ``count`` of ``wall_views`` in room ``seed``: the views the walkthroughs rarely hold."""
    source = SyntheticSource(seed)
    rows = []
    try:
        for k, pose in enumerate(wall_views(source.scene, count, seed)):
            frame = source.view(pose, len(source) + k)
            ok = (frame.depth > 0.1) & (frame.depth < 10.0)
            p, g = np.clip(predictor.predict(frame.rgb).depth[ok], 0.1, 10.0), frame.depth[ok]
            rows.append({"seed": seed, "abs_rel": float(np.mean(np.abs(p - g) / g)),
                         "scale": float(np.median(p / g)), "gt_median_m": float(np.median(g)),
                         "floor": float(np.mean(frame.labels == predictor.label_space.names.index("floor")))})
    finally:
        source.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=Path, required=True, help="eval_demo_model --rooms-out JSONL (val rooms)")
    parser.add_argument("--worst", type=int, default=20, help="list this many worst rooms")
    parser.add_argument("--frames-of", type=int, default=0, help="per-frame study of N worst and N median rooms")
    parser.add_argument("--stride", type=int, default=60)
    parser.add_argument("--checkpoint", default=str(bundled_checkpoint()))
    parser.add_argument("--wall-views", type=int, default=0,
                        help="also score this many synthetic.wall_views in each of the first 20 rooms")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-frame rows here")
    args = parser.parse_args()

    rooms = [json.loads(line) for line in args.rooms.read_text().splitlines() if line.strip()]
    rows = []
    for r in rooms:
        seed = int(r["dataset"].rsplit("-", 1)[1])
        rows.append({"seed": seed, "abs_rel": r["depth"]["abs_rel"], "scale_std": r["depth"]["scale_median_std"],
                     "scale_mean": r["depth"]["scale_median_mean"], "miou": r["semseg"]["miou"],
                     **room_features(seed)})
    features = [k for k in rows[0] if k not in ("seed", "abs_rel", "scale_std", "scale_mean", "miou")]
    print(f"{len(rows)} rooms; Spearman's rho of each room feature with the room's depth error:")
    print("\n".join(correlations(rows, features, ["abs_rel", "scale_std"])))
    by_kind = {k: [r["abs_rel"] for r in rows if r["kind"] == i] for i, k in enumerate(KINDS)}
    print("\nAbsRel by room kind: " + ", ".join(f"{k} {np.median(v):.3f} median, {np.max(v):.3f} worst of {len(v)}"
                                               for k, v in by_kind.items() if v))
    worst = sorted(rows, key=lambda r: -r["abs_rel"])
    cols = ["abs_rel", "scale_mean", "scale_std", "W", "D", "H", "window_m2", "door_m2", "objects", "wall_albedo",
            "floor_albedo", "kind"]
    print(f"\nworst {args.worst} rooms (median AbsRel {np.median([r['abs_rel'] for r in rows]):.3f}):")
    print(f"{'seed':<8}" + "".join(f"{c:>12}" for c in cols))
    for r in worst[:args.worst]:
        print(f"{r['seed']:<8}" + "".join(f"{KINDS[r[c]]:>12}" if c == "kind" else f"{r[c]:12.3f}" for c in cols))
    if not args.frames_of and not args.wall_views:
        return

    from m2hmx.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint)
    if args.wall_views:
        views = [v for r in rows[:20] for v in wall_view_rows(predictor, r["seed"], args.wall_views)]
        err = np.array([v["abs_rel"] for v in views])
        scale = np.array([v["scale"] for v in views])
        print(f"\n{len(views)} wall views (synthetic.wall_views) of rooms {rows[0]['seed']}-{rows[19]['seed']}: "
              f"AbsRel mean {err.mean():.3f}, median {np.median(err):.3f}, 90th percentile "
              f"{np.percentile(err, 90):.3f}, worst {err.max():.3f}; scale median(pred/gt) median "
              f"{np.median(scale):.3f}, std {scale.std():.3f}; GT median depth "
              f"{np.median([v['gt_median_m'] for v in views]):.2f} m, no floor in "
              f"{np.mean([v['floor'] == 0 for v in views]):.0%}")
    if not args.frames_of:
        return
    names = list(predictor.label_space.names)
    mid = len(worst) // 2
    studied = {"worst": worst[:args.frames_of],
               "median": worst[mid - args.frames_of // 2: mid - args.frames_of // 2 + args.frames_of]}
    frames = []
    for group, group_rows in studied.items():
        for r in group_rows:
            frames += [{**f, "group": group} for f in frame_rows(predictor, r["seed"], args.stride, names)]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(frames[0]))
            writer.writeheader()
            writer.writerows(frames)
    frame_features = ["gt_median_m", "gt_p10_m", "gt_p90_m", "brightness", "contrast", "ceiling"] + names
    frame_features = [k for k in frame_features if np.ptp([f[k] for f in frames]) > 0]
    frames_err = [dict(f, log_scale_err=abs(np.log(f["scale"]))) for f in frames]
    print(f"\n{len(frames)} frames of {args.frames_of} worst and {args.frames_of} median rooms; Spearman's rho "
          "with the frame's error:")
    print("\n".join(correlations(frames_err, frame_features, ["abs_rel", "log_scale_err"])))
    print(f"\n{'group':<8}{'frames':>7}" + "".join(f"{k:>13}" for k in ["abs_rel", "scale", "gt_median_m",
                                                                        "gt_p10_m", "brightness", "wall", "floor"]))
    for group in studied:
        g = [f for f in frames if f["group"] == group]
        print(f"{group:<8}{len(g):>7}" + "".join(f"{np.median([f[k] for f in g]):13.3f}" for k in [
            "abs_rel", "scale", "gt_median_m", "gt_p10_m", "brightness", "wall", "floor"]) + "  (medians)")


if __name__ == "__main__":
    main()
