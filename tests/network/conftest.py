"""Tiny network configs: every module of M2H-MX at a size that runs in milliseconds on CPU."""
import dataclasses

import pytest
import torch

from m2hmx.config import BackboneConfig, LoRAConfig, M2HMXConfig


def make_tiny_config(**overrides) -> M2HMXConfig:
    """A 64-wide, 4-block DINOv3 ViT (4 registers) with a 32-wide decoder; pyramid 32/16/8/4 like the paper."""
    backbone = BackboneConfig(hidden_size=64, num_layers=4, num_heads=2, intermediate_size=128,
                              layer_indices=(0, 1, 2, 3), rope_rescale=2.0)
    base = M2HMXConfig(name="tiny", num_classes=5, label_space="scannet20", image_size=(64, 96),
                       backbone=backbone, lora=LoRAConfig(style="paper", r=4, alpha=8), decoder_dim=32,
                       d_state=4, depth_bins=8)
    return dataclasses.replace(base, **overrides)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    """Factory: tiny_config(**M2HMXConfig overrides) -> M2HMXConfig."""
    return make_tiny_config
