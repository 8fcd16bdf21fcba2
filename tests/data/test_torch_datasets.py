"""FrameDataset: tensors, normalisation, geometry-consistent augmentation, label mapping."""
import numpy as np
import pytest
import torch

from m2hmx.data.readers.nyu import NYUv2Labeled
from m2hmx.data.synthetic import SyntheticSource
from m2hmx.data.torch_datasets import FrameDataset
from m2hmx.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from tests.data.helpers import write_nyu_mat


@pytest.fixture(scope="module")
def source():
    return SyntheticSource(seed=4, frames=4, height=96, width=128)


def normals_from_depth(depth, K, s=3):
    """Camera-frame normals (facing the camera) from central differences of back-projected depth."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    P = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    dx = P[s:-s, 2 * s:] - P[s:-s, :-2 * s]
    dy = P[2 * s:, s:-s] - P[:-2 * s, s:-s]
    n = -np.cross(dx, dy)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def test_item_layout_and_normalisation(source):
    ds = FrameDataset(source, size=(48, 64), augment=False)
    item = ds[1]
    assert set(item) == {"image", "depth", "semseg", "normals", "edge", "K"}
    assert item["image"].shape == (3, 48, 64) and item["image"].dtype == torch.float32
    assert item["depth"].shape == (1, 48, 64) and item["semseg"].dtype == torch.int64
    assert item["normals"].shape == (3, 48, 64) and item["edge"].shape == (1, 48, 64)
    assert item["K"].shape == (3, 3) and item["K"][0, 0] == pytest.approx(source.K[0, 0] / 2, rel=1e-5)
    img = item["image"].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    import cv2

    ref = cv2.resize(source[1].rgb, (64, 48), interpolation=cv2.INTER_AREA) / 255.0
    assert np.abs(img - ref).max() < 1e-5
    assert set(torch.unique(item["edge"]).tolist()) <= {0.0, 1.0}


def test_absent_ground_truth_is_omitted(source):
    f = source[0]
    from m2hmx.data import Frame

    rgb_only = [Frame(rgb=f.rgb, K=f.K, timestamp=0.0, depth=f.depth)]
    assert set(FrameDataset(rgb_only, size=(48, 64))[0]) == {"image", "depth", "K"}


def test_augmentation_keeps_geometry_consistent(source):
    """Normals computed from the augmented depth with the augmented K agree with the augmented normals:
    this fails if the flip does not negate normal x or mirror cx, or if K ignores the scale / crop."""
    ds = FrameDataset(source, size=(72, 96), augment=True)
    torch.manual_seed(0)
    for i in range(8):
        item = ds[i % len(ds)]
        depth = item["depth"][0].numpy().astype(np.float64)
        K = item["K"].numpy().astype(np.float64)
        n_geo = normals_from_depth(depth, K)
        n_gt = item["normals"].numpy().transpose(1, 2, 0)[3:-3, 3:-3]
        flat = item["edge"][0].numpy()[3:-3, 3:-3] == 0
        cos = np.sum(n_geo * n_gt, -1)[flat]
        assert np.median(cos) > 0.98, i
        assert item["image"].shape == (3, 72, 96) and item["semseg"].shape == (72, 96)


def test_label_mapping_nyu40_to_scannet20(tmp_path):
    write_nyu_mat(tmp_path / "nyu.mat")
    src = NYUv2Labeled(tmp_path / "nyu.mat")
    item = FrameDataset(src, size=(6, 8), label_space="scannet20")[0]
    sem = item["semseg"].numpy()
    assert (sem[0] == 0).all() and (sem[1] == 1).all() and (sem[2] == 4).all()  # wall, floor, chair
    assert sem[3, 1] == 255 and sem[4, 0] == 255  # ceiling and unlabelled are ignored in ScanNet-20


def test_augmented_K_maps_each_pixel_to_its_source_ray():
    """Encode each source pixel's (u, v) in depth; after zoom / crop / flip, the ray of every output
    pixel under the returned K must equal its source pixel's ray (x mirrored when flipped), and depth
    must be divided by the zoom."""
    from m2hmx.data import Frame

    h, w = 60, 80
    K = np.array([[70.0, 0, 41.0], [0, 72.0, 28.0], [0, 0, 1]])
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    code = (1 + u + 1000 * v).astype(np.float32)  # exact in float32 and under nearest resizing
    n = np.array([0.3, 0.2, -0.9327379], np.float32)
    frame = Frame(rgb=np.zeros((h, w, 3), np.uint8), K=K, timestamp=0.0, depth=code,
                  normals=np.broadcast_to(n, (h, w, 3)).copy())
    ds = FrameDataset([frame], size=(40, 56), augment=True)
    torch.manual_seed(1)
    flips = set()
    for _ in range(12):
        item = ds[0]
        K2 = item["K"].numpy().astype(np.float64)
        zoom = K2[0, 0] / (K[0, 0] * 56 / 80)
        assert 1.0 <= zoom <= 1.51
        c = np.rint(item["depth"][0].numpy() * zoom).astype(np.int64) - 1  # depth was divided by the zoom
        us, vs = c % 1000, c // 1000
        u2, v2 = np.meshgrid(np.arange(56), np.arange(40))
        flipped = us[0, -1] < us[0, 0]
        flips.add(bool(flipped))
        sign = -1 if flipped else 1
        # nearest sampling picks a source pixel within half a (source) pixel of the exact position
        assert np.abs((u2 - K2[0, 2]) / K2[0, 0] - sign * (us - K[0, 2]) / K[0, 0]).max() < 0.55 / K[0, 0] * 1.01
        assert np.abs((v2 - K2[1, 2]) / K2[1, 1] - (vs - K[1, 2]) / K[1, 1]).max() < 0.55 / K[1, 1] * 1.01
        assert np.allclose(item["normals"][:, 0, 0].numpy(), n * [sign, 1, 1])
    assert flips == {True, False}


def test_preload_caches_every_frame_then_closes_the_source():
    """A fully cached source is closed (its ray caster freed: a thousand live ones crashed Open3D), and items
    still come from the cache afterwards."""
    src = SyntheticSource(seed=4, frames=3, height=48, width=64)
    ds = FrameDataset(src, size=(48, 64))
    ds[0]
    assert src.holds_renderer
    ds.preload()
    assert not src.holds_renderer and ds.cached == 3
    assert torch.equal(ds[2]["depth"], FrameDataset(SyntheticSource(seed=4, frames=3, height=48, width=64),
                                                    size=(48, 64))[2]["depth"])
    assert not src.holds_renderer
