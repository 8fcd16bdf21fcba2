"""The training loop on a tiny generated scene with a tiny network: it learns, resumes bit-identically,
runs under DistributedDataParallel (2 gloo processes), and its recipes/overrides fail clearly."""
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from m2hmx.cli.train import main as train_main
from m2hmx.data.synthetic import write_scene
from m2hmx.labels import load_label_space
from m2hmx.train import (TrainError, TrainModule, build_dataset, build_model_config, load_config, lr_factor,
                         param_groups)
from m2hmx.train_config import DEFAULTS, ModelSection, OptimSection

TINY_NET = ["model.overrides.image_size=[32,48]", "model.overrides.backbone.hidden_size=32",
            "model.overrides.backbone.num_layers=4", "model.overrides.backbone.num_heads=2",
            "model.overrides.backbone.intermediate_size=64", "model.overrides.backbone.layer_indices=[0,1,2,3]",
            "model.overrides.decoder_dim=32", "model.overrides.d_state=4", "model.overrides.depth_bins=8"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene") / "room", seed=3, frames=8, height=48, width=64,
                       progress=False)


def tiny(scene, out_dir, *more):
    return ["--config", "demo", *(f"--set={s}" for s in TINY_NET + [
        "data.kind=sources", f"data.sources=[{scene}]", "data.size=[32,48]", "train.batch_size=2",
        "train.steps=20", "train.ckpt_every=10", "train.log_every=1", "train.threads=null",
        "optim.lr=3e-3", "optim.warmup_steps=2", f"train.out_dir={out_dir}", *more]), "--no-progress"]


def read_log(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_twenty_steps_lower_the_loss_and_resume_is_bit_identical(scene, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_main(tiny(scene, full)) == 0
    rows = read_log(full / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    task_sum = [sum(float(r[f"loss_{t}"]) for t in ("semseg", "depth", "normals", "edge")) for r in rows]
    assert sum(task_sum[-4:]) / 4 < 0.8 * sum(task_sum[:4]) / 4
    assert (full / "model.safetensors").is_file()
    given = [a.removeprefix("--set=") for a in tiny(scene, full) if a.startswith("--set=")]
    assert load_config(str(full / "config.yaml")) == load_config("demo", given)  # the run's recipe, read back

    assert train_main(tiny(scene, split, "train.stop_at=10")) == 0
    assert torch.load(split / "last.pt", weights_only=False)["step"] == 10
    assert train_main(tiny(scene, split) + ["--resume"]) == 0
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(split / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 20
    assert a["module"].keys() == b["module"].keys()
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in a["module"])
    def without_timing(log):
        return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in log]

    assert without_timing(read_log(split / "log.csv")) == without_timing(rows)


def test_init_from_starts_a_fresh_run_from_saved_weights_and_log_variances(scene, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_main(tiny(scene, first, "train.steps=10")) == 0
    saved = torch.load(first / "last.pt", weights_only=False)["module"]
    # lr 0: the one step changes nothing, so the new run's state is exactly what init_from loaded
    assert train_main(tiny(scene, second, "train.steps=1", "optim.lr=0.0",
                           f"train.init_from={first / 'model.safetensors'}")) == 0
    state = torch.load(second / "last.pt", weights_only=False)
    assert state["step"] == 1
    assert not torch.equal(saved["criterion.uncertainty.log_vars"], torch.zeros(4))  # learned, not the init
    assert all(torch.equal(saved[k], state["module"][k]) for k in saved)

    wider = tiny(scene, tmp_path / "third", "train.steps=1", "model.overrides.decoder_dim=64",
                 f"train.init_from={first / 'model.safetensors'}")
    assert train_main(wider) == 1  # a checkpoint that exists but does not fit: a failure met while working
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train.init_from" in err and "wrong shape" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, argv, out_dir):
    import os

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from m2hmx.train import load_config, train

    cfg = load_config("demo", [a.removeprefix("--set=") for a in argv if a.startswith("--set=")])
    module = train(cfg, progress=False)
    torch.save(module.state_dict(), f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_processes_stay_in_sync(scene, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    argv = tiny(scene, out, "train.steps=3")  # 2 frames per rank and step
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), argv, str(out)), nprocs=2)
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # different data per rank, averaged gradients
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 3
    assert len(read_log(out / "log.csv")) == 3


def test_recipes_and_overrides():
    cfg = load_config("demo", ["optim.lr=0.01", "train.steps=7", "loss.consistency_se=0.0"])
    assert cfg.optim.lr == 0.01 and cfg.train.steps == 7 and cfg.loss["consistency_se"] == 0.0
    assert cfg.train.batch_size == 4  # from the recipe, not the defaults
    assert DEFAULTS.optim.lr == 2e-4 and DEFAULTS.train.batch_size == 8  # defaults untouched
    for bad, msg in ((["optim.lrr=1"], "unknown config key 'optim.lrr'"), (["optim=3"], "must be a mapping"),
                     (["nokey"], "not key=value")):
        with pytest.raises(TrainError, match=msg):
            load_config("demo", bad)
    with pytest.raises(TrainError, match="neither a file nor a bundled recipe"):
        load_config("no-such-recipe")
    with pytest.raises(TrainError, match="not a field of BackboneConfig"):
        build_model_config(ModelSection(preset="m2hmx-demo", overrides={"backbone": {"widht": 3}}))
    for name in ("nyudv2", "scannet", "cityscapes"):
        assert load_config(name).model.preset == "m2hmx-l"


def test_synthetic_data_renders_every_stride_th_frame_of_each_room():
    cfg = load_config("demo", ["data.seeds=[5,7]", "data.frames=20", "data.stride=8", "data.height=48",
                               "data.width=64", "data.size=[32,48]", "data.augment=false"])
    data = build_dataset(cfg.data, load_label_space("scannet20"))
    assert len(data) == 6  # frames 0, 8, 16 of rooms 5 and 6
    item = data[4]
    assert item["image"].shape == (3, 32, 48) and item["semseg"].shape == (32, 48)
    assert item["K"][0, 0] == pytest.approx(data.datasets[1].source.source.K[0, 0] * 48 / 64, rel=1e-6)
    from m2hmx.data.synthetic import SyntheticSource

    expected = SyntheticSource(6, 20, 48, 64)[8]
    assert data.datasets[1].source[1].rgb.tobytes() == expected.rgb.tobytes()


def test_wall_views_add_views_close_to_a_wall_after_each_room_s_walk(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # rendered in this process: no start-up
    cfg = load_config("demo", ["data.seeds=[5,7]", "data.frames=20", "data.stride=8", "data.height=48",
                               "data.width=64", "data.size=[32,48]", "data.augment=false", "data.wall_views=2"])
    data = build_dataset(cfg.data, load_label_space("scannet20"))
    assert len(data) == 10  # frames 0, 8, 16 and two wall views of rooms 5 and 6
    from m2hmx.data.synthetic import SyntheticSource, wall_views

    room = SyntheticSource(6, 20, 48, 64)
    expected = room.view(wall_views(room.scene, 2, 6)[1], 21)
    assert data.datasets[1].source[4].rgb.tobytes() == expected.rgb.tobytes()
    assert data.datasets[1].source[2].rgb.tobytes() == room[16].rgb.tobytes()


def test_rooms_rendered_in_worker_processes_equal_rooms_rendered_in_process(monkeypatch):
    cfg = load_config("demo", ["data.seeds=[3,6]", "data.frames=20", "data.stride=10", "data.height=48",
                               "data.width=64", "data.size=[32,48]", "data.augment=false"])
    space = load_label_space("scannet20")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    pooled = build_dataset(cfg.data, space)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    serial = build_dataset(cfg.data, space)
    assert len(pooled) == len(serial) == 6
    for i in range(6):  # same frames in the same (seed) order
        a, b = pooled[i], serial[i]
        assert all(torch.equal(a[k], b[k]) for k in ("image", "depth", "semseg", "normals", "edge"))
    assert [d.source.source.seed for d in pooled.datasets] == [3, 4, 5]


@pytest.mark.parametrize("seeds, refused", [("[99999,100000]", None), ("[99999,100001]", "heldout rooms"),
                                            ("[100000,100002]", "heldout rooms"), ("[0,200001]", "val rooms"),
                                            ("[900005,900006]", "test rooms (seeds 900000-900119)"),
                                            ("[950000,950001]", "no named range yet")])
def test_training_never_uses_the_evaluation_rooms(seeds, refused):
    cfg = load_config("demo", [f"data.seeds={seeds}", "data.frames=1", "data.height=24", "data.width=32",
                               "data.size=[24,32]"])
    if refused is None:  # room 99999 is the last one training may use
        assert len(build_dataset(cfg.data, load_label_space("scannet20"))) == 1
    else:
        with pytest.raises(TrainError, match=re.escape(refused)):
            build_dataset(cfg.data, load_label_space("scannet20"))


def test_training_refuses_a_test_room_given_as_a_source():
    cfg = load_config("demo", ["data.kind=sources", "data.sources=[synthetic:5,synthetic:900017]"])
    with pytest.raises(TrainError, match=r"data.sources has synthetic:900017: .*test rooms \(seeds 900000-900119\)"):
        build_dataset(cfg.data, load_label_space("scannet20"))


def test_cityscapes_recipe_fails_with_one_line_message(capsys):
    assert train_main(["--config", "cityscapes", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Cityscapes dataset reader" in err


def test_param_groups_no_decay_on_norms_biases_ssm_and_log_vars():
    from m2hmx.losses import MultiTaskLoss
    from m2hmx.model import build_model

    cfg = load_config("demo", [s for s in TINY_NET])
    model = build_model(build_model_config(cfg.model))
    module = TrainModule(model, MultiTaskLoss(model.config.tasks, 0.1, 10.0), None)
    groups = param_groups(module, OptimSection(lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.5))
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(module.named_parameters())
    assert len(decay_of) == sum(p.requires_grad for p in named.values())
    for name, p in named.items():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        expect = 0.0 if p.ndim <= 1 or leaf in ("A_log", "D", "log_vars", "cls_token", "register_tokens", "mask_token") else 0.05
        assert decay_of[id(p)] == expect, name
        assert lr_of[id(p)] == (5e-4 if name.startswith("model.backbone.") else 1e-3), name
    assert any(n.endswith("A_log") for n in named) and any(n.endswith("log_vars") for n in named)


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "poly", 0.9) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "poly", 0.9) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "poly", 0.9) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(55, 100, 10, "cosine", 0.9) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine", 0.9) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TrainError):
        lr_factor(50, 100, 10, "step", 0.9)


@pytest.mark.parametrize("user_policy, expected", [(None, "ACTIVE"), ("PASSIVE", "PASSIVE")])
def test_train_cli_lets_openmp_threads_spin_unless_the_user_chose(user_policy, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    code = ("import os, m2hmx.cli.train as t; t.main(['--config', 'no-such-recipe']); "
            "import torch; print(os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [expected], out.stderr
