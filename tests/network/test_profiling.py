"""m2hmx.profiling: the FLOP count runs on the meta device, where the selective scan is shape only."""
import torch

from m2hmx.profiling import count_macs, count_params
from m2hmx.ssm import scan_backend, selective_scan


def test_scan_on_meta_is_shape_only():
    assert scan_backend("meta") == "shape" and scan_backend("cpu") == "cpu"
    with torch.device("meta"):
        u, delta = torch.empty(2, 8, 4096), torch.empty(2, 8, 4096)
        A, B, C = torch.empty(8, 4), torch.empty(2, 4, 4096), torch.empty(2, 4, 4096)
    y = selective_scan(u, delta, A, B, C)
    assert y.shape == u.shape and y.device.type == "meta"


def test_macs_follow_the_image_area(tiny_config):
    config = tiny_config()
    small, large = count_macs(config, 64, 96), count_macs(config, 128, 192)
    assert small > 0 and 3.6 < large / small < 4.4  # convolutions, projections and the scan's inputs scale with area
    total, trainable = count_params(config)
    assert total >= trainable > 0
