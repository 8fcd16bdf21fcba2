"""``m2hmx-map``: a headless run writes the map's exports and metrics.json, and bad input is one line."""
import json

from app.map_cli import main


def test_map_command_tracks_a_generated_room_and_writes_exports_and_metrics(tmp_path, capsys):
    out = tmp_path / "map"
    assert main(["--dataset", "synthetic:0", "--depth", "gt", "--max-frames", "20", "--no-progress",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 20 and metrics["tracking_failures"] == 0
    assert metrics["odometry"] == "point_to_plane" and metrics["scale_alignment"] is False
    assert metrics["ate_rmse_m"] < 0.01
    # The room's six objects in view each get one scene-graph node (exact depth and labels).
    assert {k: metrics["objects"][k] for k in ("true_objects", "matched", "nodes")} == \
        {"true_objects": 6, "matched": 6, "nodes": 6}
    for name in ("mesh.ply", "mesh.glb", "points.ply", "trajectory.tum", "trajectory.csv", "dsg.json"):
        assert (out / name).stat().st_size > 0, name
    # 20 frames are 0.63 s: a Sim(3) ATE (an exact-depth map keeps its scale) but no RPE over 1 s.
    assert metrics["ate_sim3_rmse_m"] <= metrics["ate_rmse_m"] and abs(metrics["ate_sim3_scale"] - 1) < 0.05
    assert metrics["rpe_1s_trans_m"] is None and metrics["rpe_1s_rot_deg"] is None
    printed = capsys.readouterr().out
    assert f"ATE RMSE {metrics['ate_rmse_m'] * 100:.2f} cm ({metrics['ate_sim3_rmse_m'] * 100:.2f} cm with scale " \
        f"{metrics['ate_sim3_scale']:.3f})" in printed and "RPE" not in printed
    assert "objects 6 of 6 found by 6 nodes" in printed


def test_map_command_with_predicted_depth_uses_the_sparse_odometry_unless_told(tmp_path):
    for extra, method in (([], "vio"), (["--odometry", "hybrid"], "hybrid")):
        out = tmp_path / method
        assert main(["--dataset", "synthetic:100000", "--depth", "pred", "--max-frames", "5", "--no-progress",
                     "--out", str(out), *extra]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["odometry"] == method and metrics["scale_alignment"] is True
        assert metrics["frames"] == 5


def test_odometry_choices_are_the_trackers_methods():
    from app.pipeline import ODOMETRY_CHOICES
    from mapping.odometry import ODOMETRY_MODES
    from mapping.tracking import ODOMETRY_METHODS

    assert sorted(ODOMETRY_CHOICES) == sorted((*ODOMETRY_METHODS, *ODOMETRY_MODES))


def test_map_command_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-scene"
    assert main(["--dataset", str(missing), "--out", str(tmp_path / "map")]) == 2  # a path that does not exist
    err = capsys.readouterr().err.strip()
    assert err.startswith("m2hmx-map: error:") and str(missing) in err and "\n" not in err
    assert not (tmp_path / "map").exists()
