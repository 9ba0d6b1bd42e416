"""`from_clip` works on any CLIP: the temporal transformer and the HBI modules take their sizes from the CLIP config
(or from explicit overrides), for ViT-B/32, B/16, L/14 and L/14-336.

Tiny towers keep the ratios that differ between the sizes (tower widths, feed-forward ratio, head width, patch and
image sides); the real shapes are checked on the meta device, where no weight is allocated."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from hbi_hf import HBIConfig, HBIForRetrieval

# (text width, text feed-forward, text heads, text layers), (vision width, feed-forward, heads, layers, patch, image),
# projection: the OpenAI CLIP checkpoints
REAL_SHAPES = {
    "ViT-B/32": ((512, 2048, 8, 12), (768, 3072, 12, 12, 32, 224), 512),
    "ViT-B/16": ((512, 2048, 8, 12), (768, 3072, 12, 12, 16, 224), 512),
    "ViT-L/14": ((768, 3072, 12, 12), (1024, 4096, 16, 24, 14, 224), 768),
    "ViT-L/14-336": ((768, 3072, 12, 12), (1024, 4096, 16, 24, 14, 336), 768),
}
# the same relations at 1/16 of the widths, 2 layers, and small frames (patch and image sides keep the patch grid
# shape of B/32 (2x2), B/16 (4x4), L/14 (2x2 of 14 px) and L/14-336 (3x3 of 14 px))
TINY_SHAPES = {
    "ViT-B/32": ((32, 128, 4, 2), (48, 192, 6, 2, 16, 32), 32),
    "ViT-B/16": ((32, 128, 4, 2), (48, 192, 6, 2, 8, 32), 32),
    "ViT-L/14": ((48, 192, 6, 2), (64, 256, 8, 2, 14, 28), 48),
    "ViT-L/14-336": ((48, 192, 6, 2), (64, 256, 8, 2, 14, 42), 48),
}


def clip_config(shapes) -> CLIPConfig:
    (t_width, t_mlp, t_heads, t_layers), (v_width, v_mlp, v_heads, v_layers, patch, image), projection = shapes
    return CLIPConfig(
        text_config=dict(
            hidden_size=t_width, intermediate_size=t_mlp, num_attention_heads=t_heads, num_hidden_layers=t_layers
        ),
        vision_config=dict(
            hidden_size=v_width,
            intermediate_size=v_mlp,
            num_attention_heads=v_heads,
            num_hidden_layers=v_layers,
            patch_size=patch,
            image_size=image,
        ),
        projection_dim=projection,
    )


@pytest.mark.parametrize("size", REAL_SHAPES)
def test_real_clip_shapes_give_a_temporal_transformer_the_text_layers_initialise(size):
    config = HBIConfig.from_clip_config(clip_config(REAL_SHAPES[size]))
    text = config.text_config
    assert config.projection_dim == text.hidden_size
    assert config.temporal_intermediate_size == text.intermediate_size
    assert config.temporal_num_attention_heads == text.num_attention_heads
    with torch.device("meta"):
        model = HBIForRetrieval(config)
    temporal = model.hbi.temporal.layers[0].state_dict()
    text_layer = model.hbi.clip.text_model.encoder.layers[0].state_dict()
    assert {k: v.shape for k, v in temporal.items()} == {k: v.shape for k, v in text_layer.items()}
    assert model.hbi.levels[0].text_weight.fc1.in_features == config.projection_dim
    assert model.hbi.text_merges[0].conv.in_channels == config.projection_dim


@pytest.mark.parametrize("size", TINY_SHAPES)
def test_from_clip_builds_and_runs_on_every_clip_size(tmp_path, size):
    torch.manual_seed(0)
    clip = CLIPModel(clip_config(TINY_SHAPES[size]))
    clip.save_pretrained(tmp_path)
    model = HBIForRetrieval.from_clip(
        str(tmp_path), num_frames=4, max_words=8, video_cluster_counts=[2, 1], text_cluster_counts=[4, 2]
    ).train()
    first_text_layer = clip.text_model.encoder.layers[0].state_dict()
    for key, value in model.hbi.temporal.layers[0].state_dict().items():
        torch.testing.assert_close(value, first_text_layer[key])
    image = clip.config.vision_config.image_size
    input_ids = torch.randint(1, 90, (2, 8))
    output = model(input_ids=input_ids, pixel_values=torch.randn(2, 4, 3, image, image), return_loss=True)
    output.loss.backward()
    assert output.logits_per_text.shape == (2, 2) and torch.isfinite(output.loss)


def test_explicit_temporal_sizes_win_and_a_mismatched_transformer_keeps_its_random_init(tmp_path):
    torch.manual_seed(0)
    CLIPModel(clip_config(TINY_SHAPES["ViT-L/14"])).save_pretrained(tmp_path)
    model = HBIForRetrieval.from_clip(
        str(tmp_path),
        num_frames=4,
        temporal_num_layers=1,
        temporal_num_attention_heads=3,
        temporal_intermediate_size=96,
        merge_num_attention_heads=6,
    )
    assert (model.config.temporal_num_attention_heads, model.config.temporal_intermediate_size) == (3, 96)
    assert model.hbi.temporal.layers[0].mlp.fc1.out_features == 96 and len(model.hbi.temporal.layers) == 1


def test_default_config_keeps_the_vit_b_temporal_transformer():
    config = HBIConfig()
    assert (config.temporal_num_attention_heads, config.temporal_intermediate_size) == (8, 2048)


def test_training_script_exposes_the_size_overrides():
    from hbi_hf.training import HBIModelArguments

    args = HBIModelArguments(temporal_num_attention_heads=12, temporal_intermediate_size=3072, temporal_num_layers=2)
    assert args.config_overrides() == dict(
        temporal_num_attention_heads=12, temporal_intermediate_size=3072, temporal_num_layers=2
    )
