"""DINOv3 backbone: raw hidden states, weight loading (HF folder, Meta .pth), LoRA placement and freezing."""
import dataclasses
import re

import pytest
import torch
from transformers import DINOv3ViTModel

from m2hmx.backbone import BackboneWeightsError, DINOv3Backbone, hf_config, lora_plan
from m2hmx.config import BackboneConfig, LoRAConfig, get_preset
from m2hmx.model import build_model

TINY = BackboneConfig(hidden_size=64, num_layers=4, num_heads=2, intermediate_size=128, layer_indices=(0, 1, 2, 3))
NO_LORA = LoRAConfig(style="none")


def random_hf_vit() -> DINOv3ViTModel:
    vit = DINOv3ViTModel(hf_config(TINY)).eval()
    with torch.no_grad():  # make every weight non-trivial (layer scales and tokens init to constants)
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit


def meta_state_dict(vit: DINOv3ViTModel) -> dict:
    """The official facebookresearch/dinov3 layout of ``vit``: fused qkv with a masked key bias."""
    sd, out = vit.state_dict(), {}
    renames = [("embeddings.cls_token", "cls_token"), ("embeddings.register_tokens", "storage_tokens"),
               ("embeddings.patch_embeddings.", "patch_embed.proj."), ("model.layer.", "blocks."),
               (".attention.o_proj.", ".attn.proj."), (".layer_scale1.lambda1", ".ls1.gamma"),
               (".layer_scale2.lambda1", ".ls2.gamma"), (".mlp.up_proj.", ".mlp.fc1."),
               (".mlp.down_proj.", ".mlp.fc2.")]
    for k, v in sd.items():
        if re.search(r"attention\.[qkv]_proj", k):
            continue
        if k == "embeddings.mask_token":
            out["mask_token"] = v.reshape(1, -1)
            continue
        for a, b in renames:
            k = k.replace(a, b)
        out[k] = v
    for i in range(TINY.num_layers):
        p = f"model.layer.{i}.attention."
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[p + f"{n}_proj.weight"] for n in "qkv"])
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([sd[p + "q_proj.bias"], torch.randn(64),  # masked out
                                                      sd[p + "v_proj.bias"]])
        out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat([torch.ones(64), torch.zeros(64), torch.ones(64)])
    out["rope_embed.periods"] = torch.ones(8)
    return out


def test_backbone_returns_raw_hidden_states_and_registers():
    vit = random_hf_vit()
    backbone = DINOv3Backbone(TINY, NO_LORA).eval()
    backbone.vit.load_state_dict(vit.state_dict())
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        maps, registers = backbone(x)
        hidden = vit(x, output_hidden_states=True).hidden_states  # [embeddings, block0, ...] un-normed
    assert [m.shape for m in maps] == [(2, 64, 3, 5)] * 4
    for i, m in enumerate(maps):
        torch.testing.assert_close(m.flatten(2).transpose(1, 2), hidden[i + 1][:, 5:])
    torch.testing.assert_close(registers, hidden[4][:, 1:5])


def test_meta_pth_converts_to_the_same_outputs(tmp_path):
    vit = random_hf_vit()
    path = tmp_path / "dinov3_tiny_pretrain.pth"
    torch.save(meta_state_dict(vit), path)
    from_meta = DINOv3Backbone(dataclasses.replace(TINY, weights=str(path)), NO_LORA).eval()
    reference = DINOv3Backbone(TINY, NO_LORA).eval()
    reference.vit.load_state_dict(vit.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(from_meta(x)[0] + [from_meta(x)[1]], reference(x)[0] + [reference(x)[1]]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_hf_folder_loads(tmp_path):
    vit = random_hf_vit()
    vit.save_pretrained(tmp_path / "hf")
    backbone = DINOv3Backbone(dataclasses.replace(TINY, weights=str(tmp_path / "hf")), NO_LORA)
    for k, v in vit.state_dict().items():
        assert torch.equal(backbone.vit.state_dict()[k], v), k


def test_wrong_or_partial_weights_are_refused(tmp_path):
    sd = meta_state_dict(random_hf_vit())
    partial = {k: v for k, v in sd.items() if not k.startswith("blocks.3.mlp")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(BackboneWeightsError, match=r"partial\.pth.*missing keys: model\.layer\.3\.mlp\.down_proj"):
        DINOv3Backbone(dataclasses.replace(TINY, weights=str(tmp_path / "partial.pth")), NO_LORA)
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(BackboneWeightsError, match=r"unexpected keys .*head\.weight"):
        DINOv3Backbone(dataclasses.replace(TINY, weights=str(tmp_path / "extra.pth")), NO_LORA)
    bigger = dataclasses.replace(TINY, hidden_size=128, intermediate_size=256, weights=str(tmp_path / "extra.pth"))
    torch.save(sd, tmp_path / "small.pth")
    with pytest.raises(BackboneWeightsError, match="wrong shapes"):
        DINOv3Backbone(dataclasses.replace(bigger, weights=str(tmp_path / "small.pth")), NO_LORA)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneWeightsError, match=r"junk\.pth: cannot read"):
        DINOv3Backbone(dataclasses.replace(TINY, weights=str(tmp_path / "junk.pth")), NO_LORA)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneWeightsError, match="no \\*.safetensors"):
        DINOv3Backbone(dataclasses.replace(TINY, weights=str(tmp_path / "empty")), NO_LORA)


def _lora_modules(model) -> set[tuple[int, str]]:
    found = set()
    for name, _ in model.named_modules():
        m = re.search(r"layer\.(\d+)\.(?:attention|mlp)\.(\w+)\.lora_A$", name)
        if m:
            found.add((int(m.group(1)), m.group(2)))
    return found


def test_paper_lora_on_vit_l_blocks_12_to_23_only():
    with torch.device("meta"):
        model = build_model(get_preset("m2hmx-l"))
    expected = {(b, n) for b in range(12, 24) for n in ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")}
    assert _lora_modules(model) == expected
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == 12 * 16 * (3 * 2048 + 2 * (1024 + 4096))  # 3.15 M (section 4, HF layout)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert all(p.requires_grad for p in head_params)


def test_released_lora_on_all_qkv_and_trainable_norms():
    cfg = get_preset("m2hmx-l", lora=LoRAConfig(style="released"))
    with torch.device("meta"):
        model = build_model(cfg)
    assert _lora_modules(model) == {(b, n) for b in range(24) for n in ("q_proj", "k_proj", "v_proj")}
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable == {f"vit.model.layer.{b}.norm{i}.{w}" for b in range(24) for i in (1, 2)
                         for w in ("weight", "bias")}
    assert lora_plan(cfg.backbone, cfg.lora)[1] == list(range(24))


def test_demo_backbone_trains_from_scratch_without_lora():
    model = build_model("m2hmx-demo")
    assert _lora_modules(model) == set()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.vit.norm.weight", "backbone.vit.norm.bias", "backbone.vit.embeddings.mask_token"}


@pytest.mark.parametrize("rescale,differs", [(2.0, True), (None, False)])
def test_rope_rescale_augmentation_only_in_train_mode(rescale, differs):
    backbone = DINOv3Backbone(dataclasses.replace(TINY, rope_rescale=rescale), NO_LORA)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        backbone.train()
        a, b = backbone(x)[0][-1], backbone(x)[0][-1]
        backbone.eval()
        c, d = backbone(x)[0][-1], backbone(x)[0][-1]
    assert (not torch.equal(a, b)) == differs
    assert torch.equal(c, d)
