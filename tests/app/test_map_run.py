"""app.map_run: m2hmx-map's run as a library call, and the label-space choice the viewer shares."""
import json

import pytest

from app.map_run import map_sequence
from m2hmx.labels import choose_label_space, load_label_space
from mapping.bridge import MappingConfig


def test_map_sequence_maps_scores_and_exports(tmp_path):
    run = map_sequence("synthetic:0", MappingConfig(depth_mode="gt", use_pose_prior=True), max_frames=6,
                       progress=False)
    assert (run.frames, run.failures, run.error) == (6, 0, None) and len(run.gt[0]) == 6
    written = run.export(tmp_path / "map")
    metrics = run.metrics()
    assert {p.name for p in written} >= {"mesh.ply", "trajectory.tum", "dsg.json"}
    assert metrics["frames"] == 6 and metrics["odometry"] is None and metrics["export_s"] > 0
    assert metrics["ate_rmse_m"] < 1e-6  # mapped at the ground-truth poses
    assert metrics["objects"]["true_objects"] > 0 and metrics["objects"]["nodes"] > 0
    json.dumps(metrics)  # what m2hmx-map writes


def test_a_missing_dataset_is_an_error_naming_it(tmp_path):
    with pytest.raises(Exception, match="no-such-scene"):
        map_sequence(str(tmp_path / "no-such-scene"), MappingConfig(), progress=False)


def test_label_space_choice_prefers_the_request_then_the_model_then_the_source():
    scannet, nyu = load_label_space("scannet20"), load_label_space("nyu40")
    assert choose_label_space(None, None, None) == (scannet, "")
    assert choose_label_space(None, None, nyu) == (nyu, "")
    assert choose_label_space(None, scannet, nyu) == (scannet, "")
    assert choose_label_space("nyu40", None, scannet) == (nyu, "")
    space, warning = choose_label_space("nyu40", scannet, None)  # the network's ids index the model's space
    assert space is scannet and "nyu40 has 40 classes" in warning and "using the model's" in warning
