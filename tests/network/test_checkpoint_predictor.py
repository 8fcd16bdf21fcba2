"""Checkpoint round trip and refusals; the deployment Predictor on odd image sizes."""

import numpy as np
import pytest
import torch

from m2hmx.checkpoint import CheckpointError, load_model, load_state, read_checkpoint_info, save_checkpoint
from m2hmx.model import build_model
from m2hmx.predictor import Predictor, PredictorError


@pytest.fixture
def tiny_ckpt(tmp_path, tiny_config):
    model = build_model(tiny_config())
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter for the round trip
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    path = save_checkpoint(tmp_path / "tiny.safetensors", model, extra={"step": 7})
    return model, path


def test_round_trip_is_bit_exact(tiny_ckpt):
    model, path = tiny_ckpt
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 64, 96)
    model.eval()
    with torch.no_grad():
        oa, ob = model(x), loaded(x)
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    assert read_checkpoint_info(path)[1] == {"step": 7}
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_wrong_checkpoints_are_refused(tiny_ckpt, tmp_path, tiny_config):
    _, path = tiny_ckpt
    other = build_model(tiny_config(decoder_dim=64))
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: weights do not match the model \(.*wrong shape"):
        load_state(other, path)
    two_heads = build_model(tiny_config(tasks=("semseg", "depth")))
    with pytest.raises(CheckpointError, match=r"unexpected: decoder\.branches\.edge.*\(198\)"):
        load_state(two_heads, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors: not a readable safetensors file, truncated"):
        load_model(truncated)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_model(junk)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an M2H-MX checkpoint"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("tasks", [("semseg", "depth"), ("semseg", "depth", "normals", "edge")])
def test_predictor_outputs_at_odd_input_size(tmp_path, tiny_config, tasks):
    model = build_model(tiny_config(tasks=tasks, image_size=(64, 96)))
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    predictor = Predictor.from_checkpoint(path, "cpu")
    assert predictor.tasks == tasks and predictor.label_space.num_classes == 20
    rgb = np.random.default_rng(0).integers(0, 256, (250, 330, 3), dtype=np.uint8)
    assert predictor.network_size(250, 330) == (73, 96)  # long side to the training scale, padded to 80x96
    p = predictor.predict(rgb, return_probs=True)
    assert p.depth.shape == p.labels.shape == p.confidence.shape == (250, 330)
    assert p.depth.dtype == np.float32 and np.isfinite(p.depth).all() and (p.depth > 0).all()
    assert p.labels.dtype == np.uint8 and p.labels.max() < 5
    assert p.probs.shape == (5, 250, 330)
    np.testing.assert_allclose(p.probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.confidence, p.probs.max(0), atol=1e-6)
    assert (p.labels == p.probs.argmax(0)).all()
    if "normals" in tasks:
        assert p.normals.shape == (250, 330, 3)
        np.testing.assert_allclose(np.linalg.norm(p.normals, axis=2), 1.0, atol=1e-5)
        assert p.edges.shape == (250, 330) and ((p.edges >= 0) & (p.edges <= 1)).all()
    else:
        assert p.normals is None and p.edges is None
    assert predictor.predict(rgb).probs is None


def test_predictor_matches_model_at_training_size(tiny_config):
    """At the training size there is no resize or padding: the prediction is the model's output."""
    model = build_model(tiny_config()).eval()
    predictor = Predictor(model)
    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - torch.tensor([0.485, 0.456, 0.406])
         .view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
    p = predictor.predict(rgb)
    np.testing.assert_allclose(p.depth, out["depth"][0, 0].clamp_min(0.1).numpy(), rtol=1e-5, atol=1e-5)
    assert (p.labels == out["semseg"][0].argmax(0).numpy()).all()


def test_predictor_rejects_bad_images(tiny_config):
    predictor = Predictor(build_model(tiny_config()))
    with pytest.raises(PredictorError, match="uint8 \\(H,W,3\\)"):
        predictor.predict(np.zeros((64, 96, 3), np.float32))
    with pytest.raises(PredictorError, match="uint8"):
        predictor.predict(np.zeros((64, 96), np.uint8))


def test_demo_predictor_at_480x640():
    predictor = Predictor(build_model("m2hmx-demo"))
    assert predictor.network_size(480, 640) == (240, 320)
    p = predictor.predict(np.full((480, 640, 3), 128, np.uint8))
    assert p.depth.shape == p.labels.shape == p.edges.shape == (480, 640) and p.normals.shape == (480, 640, 3)
    assert p.labels.max() < 20 and (p.depth > 0).all()


def test_bundled_weights_are_registered_with_their_preset():
    from m2hmx import ASSETS_DIR
    from m2hmx.config import PRESETS, ConfigError, bundled_checkpoint

    assert bundled_checkpoint() == bundled_checkpoint("m2hmx-demo") == ASSETS_DIR / "m2hmx-demo.safetensors"
    assert "m2hmx-demo" in PRESETS
    with pytest.raises(ConfigError, match="no bundled weights for the preset 'm2hmx-l' \\(bundled: m2hmx-demo\\)"):
        bundled_checkpoint("m2hmx-l")
