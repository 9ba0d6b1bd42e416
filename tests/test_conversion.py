"""Conversion of official HBI checkpoints: every key mapped, and the converted model computes what the official
tensors compute (reference written here from the spec's formulas, on the official tensors, without the converter)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hbi_hf import AutoModelForVideoTextRetrieval, HBIBanzhafEstimator, HBIForRetrieval, HBIModel
from hbi_hf.conversion import (
    HBIConversionError,
    convert_official_checkpoint,
    convert_official_estimator_checkpoint,
    convert_official_estimator_state_dict,
    convert_official_state_dict,
    official_config,
)

WIDTH, VISION_WIDTH, HEAD_DIM, LAYERS, TEMPORAL_LAYERS = 32, 48, 8, 2, 2
VOCAB, CONTEXT, PATCH, IMAGE, PLANES = 100, 77, 16, 32, 8
FRAMES, WORDS = 6, 10
REPO_ROOT = Path(__file__).resolve().parents[1]


def _block(prefix: str, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One OpenAI-CLIP residual block with the official key names and shapes."""

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    return {
        f"{prefix}attn.in_proj_weight": rand(3 * width, width),
        f"{prefix}attn.in_proj_bias": rand(3 * width),
        f"{prefix}attn.out_proj.weight": rand(width, width),
        f"{prefix}attn.out_proj.bias": rand(width),
        f"{prefix}ln_1.weight": 1 + rand(width),
        f"{prefix}ln_1.bias": rand(width),
        f"{prefix}mlp.c_fc.weight": rand(4 * width, width),
        f"{prefix}mlp.c_fc.bias": rand(4 * width),
        f"{prefix}mlp.c_proj.weight": rand(width, 4 * width),
        f"{prefix}mlp.c_proj.bias": rand(width),
        f"{prefix}ln_2.weight": 1 + rand(width),
        f"{prefix}ln_2.bias": rand(width),
    }


def _banzhaf(prefix: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    return {
        f"{prefix}Q": rand(PLANES, PLANES),
        f"{prefix}K": rand(PLANES, PLANES),
        f"{prefix}V": rand(PLANES, PLANES),
        f"{prefix}cnn1.weight": rand(PLANES, 1, 3, 3),
        f"{prefix}cnn1.bias": rand(PLANES),
        f"{prefix}bn.weight": torch.ones(PLANES),
        f"{prefix}bn.bias": torch.zeros(PLANES),
        f"{prefix}bn.running_mean": torch.zeros(PLANES),
        f"{prefix}bn.running_var": torch.ones(PLANES),
        f"{prefix}bn.num_batches_tracked": torch.tensor(0),
        f"{prefix}cnn2.weight": rand(1, PLANES, 3, 3),
        f"{prefix}cnn2.bias": rand(1),
    }


def official_retrieval_state_dict(
    seed: int = 0, fp16_clip: bool = True, width: int = WIDTH, vision_width: int = VISION_WIDTH, vocab: int = VOCAB
) -> dict[str, torch.Tensor]:
    """A state dict in the official retrieval format (names as documented, tiny widths), CLIP Linear/Conv tensors in
    fp16 as a GPU-trained checkpoint holds them. `width`, `vision_width`: the text (and temporal) and vision tower
    widths; `vocab`: the text vocabulary (the real CLIP's is 49,408)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {
        "clip.positional_embedding": rand(CONTEXT, width),
        "clip.text_projection": rand(width, width),
        "clip.logit_scale": torch.tensor(4.0),
        "clip.visual.class_embedding": rand(vision_width),
        "clip.visual.positional_embedding": rand((IMAGE // PATCH) ** 2 + 1, vision_width),
        "clip.visual.proj": rand(vision_width, width),
        "clip.visual.conv1.weight": rand(vision_width, 3, PATCH, PATCH),
        "clip.visual.ln_pre.weight": 1 + rand(vision_width),
        "clip.visual.ln_pre.bias": rand(vision_width),
    }
    for n in range(LAYERS):
        sd.update(_block(f"clip.visual.transformer.resblocks.{n}.", vision_width, g))
    sd.update({"clip.visual.ln_post.weight": 1 + rand(vision_width), "clip.visual.ln_post.bias": rand(vision_width)})
    for n in range(LAYERS):
        sd.update(_block(f"clip.transformer.resblocks.{n}.", width, g))
    sd.update(
        {
            "clip.token_embedding.weight": rand(vocab, width),
            "clip.ln_final.weight": 1 + rand(width),
            "clip.ln_final.bias": rand(width),
        }
    )
    for modality in ("text", "video"):
        for level in ("", "0", "1"):
            sd[f"{modality}_weight_fc{level}.0.weight"] = rand(2 * width, width)
            sd[f"{modality}_weight_fc{level}.0.bias"] = rand(2 * width)
            sd[f"{modality}_weight_fc{level}.2.weight"] = rand(1, 2 * width)
            sd[f"{modality}_weight_fc{level}.2.bias"] = rand(1)
    sd["frame_position_embeddings.weight"] = rand(CONTEXT, width)
    for n in range(TEMPORAL_LAYERS):
        sd.update(_block(f"transformerClip.resblocks.{n}.", width, g))
    for name in ("banzhafmodel", "banzhafmodel0", "banzhafmodel1", "banzhafteacher"):
        sd.update(_banzhaf(f"{name}.", g))
    for modality in ("t", "v"):
        for index in ("0", "1"):
            sd.update(
                {
                    f"{modality}_ctm{index}.conv.conv.weight": rand(width, width, 3),
                    f"{modality}_ctm{index}.norm.weight": 1 + rand(width),
                    f"{modality}_ctm{index}.norm.bias": rand(width),
                    f"{modality}_ctm{index}.score.weight": rand(1, width),
                    f"{modality}_ctm{index}.score.bias": rand(1),
                    f"{modality}_block{index}.norm1.weight": 1 + rand(width),
                    f"{modality}_block{index}.norm1.bias": rand(width),
                    f"{modality}_block{index}.attn.q.weight": rand(width, width),
                    f"{modality}_block{index}.attn.q.bias": rand(width),
                    f"{modality}_block{index}.attn.kv.weight": rand(2 * width, width),
                    f"{modality}_block{index}.attn.kv.bias": rand(2 * width),
                    f"{modality}_block{index}.attn.proj.weight": rand(width, width),
                    f"{modality}_block{index}.attn.proj.bias": rand(width),
                }
            )
    if fp16_clip:
        half = ("in_proj", "out_proj", "c_fc", "c_proj", "conv1", "visual.proj", "text_projection")
        sd = {k: v.half() if k.startswith("clip.") and any(h in k for h in half) else v for k, v in sd.items()}
    return sd


# ----- the official forward, written from the spec on the official tensors -------------------------------------------


def _layer_norm(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"].float(), sd[prefix + "bias"].float(), eps)


def _official_block(x, sd, prefix, eps, attn_mask=None, key_padding_mask=None, head_dim=HEAD_DIM):
    """OpenAI residual block on `(length, batch, width)`: pre-LN attention with the packed in_proj, QuickGELU MLP."""
    width = x.shape[-1]
    h = _layer_norm(x, sd, prefix + "ln_1.", eps)
    attended, _ = F.multi_head_attention_forward(
        h,
        h,
        h,
        width,
        width // head_dim,
        sd[prefix + "attn.in_proj_weight"].float(),
        sd[prefix + "attn.in_proj_bias"].float(),
        None,
        None,
        False,
        0.0,
        sd[prefix + "attn.out_proj.weight"].float(),
        sd[prefix + "attn.out_proj.bias"].float(),
        training=False,
        key_padding_mask=key_padding_mask,
        need_weights=False,
        attn_mask=attn_mask,
    )
    x = x + attended
    h = F.linear(
        _layer_norm(x, sd, prefix + "ln_2.", eps),
        sd[prefix + "mlp.c_fc.weight"].float(),
        sd[prefix + "mlp.c_fc.bias"].float(),
    )
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, sd[prefix + "mlp.c_proj.weight"].float(), sd[prefix + "mlp.c_proj.bias"].float())


def official_text_tokens(sd, input_ids, head_dim=HEAD_DIM):
    """Every token state after ln_final, times text_projection: `(batch, words, dim)`."""
    length = input_ids.shape[1]
    x = sd["clip.token_embedding.weight"].float()[input_ids] + sd["clip.positional_embedding"].float()[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    x = x.transpose(0, 1)
    for n in range(LAYERS):
        x = _official_block(x, sd, f"clip.transformer.resblocks.{n}.", 1e-5, attn_mask=causal, head_dim=head_dim)
    x = _layer_norm(x.transpose(0, 1), sd, "clip.ln_final.", 1e-5)
    return x @ sd["clip.text_projection"].float()


def official_frame_embeddings(sd, pixel_values, head_dim=HEAD_DIM):
    """Per-frame [CLS] after ln_post, times visual.proj: `(batch, frames, dim)`."""
    batch, frames = pixel_values.shape[:2]
    x = F.conv2d(pixel_values.flatten(0, 1), sd["clip.visual.conv1.weight"].float(), stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    cls = sd["clip.visual.class_embedding"].float().expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["clip.visual.positional_embedding"].float()
    x = _layer_norm(x, sd, "clip.visual.ln_pre.", 1e-5).transpose(0, 1)
    for n in range(LAYERS):
        x = _official_block(x, sd, f"clip.visual.transformer.resblocks.{n}.", 1e-5, head_dim=head_dim)
    cls = _layer_norm(x[0], sd, "clip.visual.ln_post.", 1e-5) @ sd["clip.visual.proj"].float()
    return cls.view(batch, frames, -1)


def official_frame_tokens(sd, frame_embeddings, video_mask, head_dim=HEAD_DIM):
    """seqTransf: `Transformer(x + pos) + x` with LayerNorm eps 1e-12 and padded frames masked as keys."""
    frames = frame_embeddings.shape[1]
    x = (frame_embeddings + sd["frame_position_embeddings.weight"][:frames]).transpose(0, 1)
    for n in range(TEMPORAL_LAYERS):
        x = _official_block(
            x, sd, f"transformerClip.resblocks.{n}.", 1e-12, key_padding_mask=~video_mask, head_dim=head_dim
        )
    return x.transpose(0, 1) + frame_embeddings


def official_weight_logits(sd, prefix, tokens):
    hidden = F.relu(F.linear(tokens, sd[prefix + ".0.weight"], sd[prefix + ".0.bias"]))
    return F.linear(hidden, sd[prefix + ".2.weight"], sd[prefix + ".2.bias"]).squeeze(-1)


def reference_entity_similarity(sd, text_tokens, text_mask, video_tokens, video_mask):
    """Eq. 12 over all (text, video) pairs with the entity-level MLPs, padded tokens excluded."""
    text_w = official_weight_logits(sd, "text_weight_fc", text_tokens).masked_fill(~text_mask, float("-inf"))
    video_w = official_weight_logits(sd, "video_weight_fc", video_tokens).masked_fill(~video_mask, float("-inf"))
    text_w, video_w = text_w.softmax(-1), video_w.softmax(-1)
    cos = torch.einsum("atd,bvd->abtv", F.normalize(text_tokens, dim=-1), F.normalize(video_tokens, dim=-1))
    cos_v = cos.masked_fill(~video_mask[None, :, None, :], float("-inf"))
    cos_t = cos.masked_fill(~text_mask[:, None, :, None], float("-inf"))
    t2v = torch.einsum("abt,at->ab", cos_v.amax(-1).nan_to_num(neginf=0.0), text_w)
    v2t = torch.einsum("abv,bv->ab", cos_t.amax(-2).nan_to_num(neginf=0.0), video_w)
    return (t2v + v2t) / 2


def official_banzhaf_module(sd, prefix, similarity):
    """BanzhafModule: ReLU(conv 1->H), cells x@Q, x@K, x@V, softmax(q k^T) without scaling, residual, conv H->1."""
    batch, words, frames = similarity.shape
    x = F.relu(F.conv2d(similarity.unsqueeze(1), sd[prefix + "cnn1.weight"], sd[prefix + "cnn1.bias"], padding=1))
    cells = x.permute(0, 2, 3, 1).reshape(batch, words * frames, -1)
    q, k, v = cells @ sd[prefix + "Q"], cells @ sd[prefix + "K"], cells @ sd[prefix + "V"]
    attended = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
    x = x + attended.view(batch, words, frames, -1).permute(0, 3, 1, 2)
    return F.conv2d(x, sd[prefix + "cnn2.weight"], sd[prefix + "cnn2.bias"], padding=1).squeeze(1)


def official_dpc_knn(x, num_clusters, k=3):
    """DPC-KNN as docs/method.md section 3 describes the official code, for unpadded tokens `(batch, tokens, dim)`:
    d_ij = ||x_i - x_j|| / sqrt(D), rho_i = exp(-mean of d^2 over the k nearest, itself included), xi_i = the distance
    to the nearest denser token (the sample's largest distance for the densest), centres = the top tokens by
    rho * xi. Returns the cluster of every token, clusters numbered by decreasing centre score (the official order)."""
    distance = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    density = torch.exp(-(distance.topk(k, dim=-1, largest=False).values ** 2).mean(-1))
    denser = density[:, None, :] > density[:, :, None]  # [b, i, j]: token j is denser than token i
    largest = distance.flatten(1).amax(-1)[:, None, None].expand_as(distance)
    indicator = torch.where(denser, distance, largest).amin(-1)
    centres = (density * indicator).topk(num_clusters, dim=-1).indices
    assignment = distance.gather(1, centres.unsqueeze(-1).expand(-1, -1, x.shape[1])).argmin(1)
    return assignment.scatter(1, centres, torch.arange(num_clusters).expand_as(centres))


def official_token_merge(sd, ctm, block, tokens, ratio):
    """CTM then TCBlock (docs/method.md section 3) on unpadded tokens: residual Conv1d + LayerNorm, score s, DPC-KNN with
    ceil(n * ratio) clusters, exp(s)-weighted means, then `c + proj(softmax(q k^T / sqrt(d) + s) v)` with one pre-LN
    for queries and keys, 8 heads."""
    x = tokens + F.conv1d(tokens.transpose(1, 2), sd[ctm + "conv.conv.weight"], padding=1).transpose(1, 2)
    x = _layer_norm(x, sd, ctm + "norm.", 1e-5)
    score = F.linear(x, sd[ctm + "score.weight"], sd[ctm + "score.bias"]).squeeze(-1)
    clusters = max(math.ceil(x.shape[1] * ratio), 1)
    weight = score.exp().unsqueeze(-1) * F.one_hot(
        official_dpc_knn(x, clusters), clusters
    )  # (batch, tokens, clusters)
    merged = (weight / (weight.sum(1, keepdim=True) + 1e-6)).transpose(1, 2) @ x

    def heads(t):
        return t.view(t.shape[0], t.shape[1], 8, -1).transpose(1, 2)

    query = F.linear(
        _layer_norm(merged, sd, block + "norm1.", 1e-5), sd[block + "attn.q.weight"], sd[block + "attn.q.bias"]
    )
    key, value = F.linear(
        _layer_norm(x, sd, block + "norm1.", 1e-5), sd[block + "attn.kv.weight"], sd[block + "attn.kv.bias"]
    ).chunk(2, -1)
    logits = heads(query) @ heads(key).transpose(-1, -2) / math.sqrt(query.shape[-1] // 8) + score[:, None, None, :]
    attended = (logits.softmax(-1) @ heads(value)).transpose(1, 2).flatten(2)
    return merged + F.linear(attended, sd[block + "attn.proj.weight"], sd[block + "attn.proj.bias"])


def reference_level_similarity(sd, suffix, text_tokens, video_tokens):
    """Eq. 12 at the action (suffix "0") or event ("1") level: the level's MLPs, every merged token valid."""
    text_w = official_weight_logits(sd, f"text_weight_fc{suffix}", text_tokens).softmax(-1)
    video_w = official_weight_logits(sd, f"video_weight_fc{suffix}", video_tokens).softmax(-1)
    cos = torch.einsum("atd,bvd->abtv", F.normalize(text_tokens, dim=-1), F.normalize(video_tokens, dim=-1))
    return (torch.einsum("abt,at->ab", cos.amax(-1), text_w) + torch.einsum("abv,bv->ab", cos.amax(-2), video_w)) / 2


# ----- inputs and fixtures --------------------------------------------------------------------------------------------


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB - 2, (3, WORDS), generator=g)
    text_mask = torch.ones(3, WORDS, dtype=torch.bool)
    for row, length in enumerate((WORDS, 7, 4)):
        input_ids[row, 0], input_ids[row, length - 1] = VOCAB - 2, VOCAB - 1
        input_ids[row, length:] = 0
        text_mask[row, length:] = False
    pixel_values = torch.randn(2, FRAMES, 3, IMAGE, IMAGE, generator=g)
    video_mask = torch.ones(2, FRAMES, dtype=torch.bool)
    video_mask[1, 4:] = False
    return input_ids, text_mask, pixel_values, video_mask


@pytest.fixture(scope="module")
def official():
    return official_retrieval_state_dict()


@pytest.fixture(scope="module")
def converted_model(official):
    model = HBIForRetrieval(official_config(official, num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM))
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    return model.eval()


def _save(sd, path: Path) -> Path:
    torch.save(sd, path)
    return path


# ----- tests ----------------------------------------------------------------------------------------------------------


def test_every_official_key_is_mapped_except_the_unused_batchnorm(official):
    converted = convert_official_state_dict(official)
    model = HBIForRetrieval(official_config(official, num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM))
    assert set(converted) == set(model.state_dict())
    bn_keys = [k for k in official if ".bn." in k]
    assert len(bn_keys) == 4 * 5
    in_proj = [k for k in official if "in_proj" in k]
    other = len(official) - len(bn_keys) - len(in_proj)
    assert len(converted) == other + 3 * len(in_proj)


def test_conversion_casts_fp16_to_fp32(official):
    assert official["clip.visual.conv1.weight"].dtype == torch.float16
    converted = convert_official_state_dict(official)
    assert all(t.dtype == torch.float32 for t in converted.values())


def test_config_is_read_from_shapes_and_the_command_line(official):
    config = official_config(official, num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM)
    assert config.text_config.hidden_size == WIDTH and config.vision_config.hidden_size == VISION_WIDTH
    assert config.vision_config.image_size == IMAGE and config.vision_config.patch_size == PATCH
    assert config.text_config.num_hidden_layers == LAYERS and config.temporal_num_layers == TEMPORAL_LAYERS
    assert config.estimator_config.hidden_size == PLANES
    assert config.cluster_mode == "ratio" and config.video_cluster_ratios == [0.25, 0.5]
    assert config.representation_reconstruction is False and config.similarity_level_weights == [1.0, 0.0, 0.0]


def test_converted_text_and_frame_tokens_equal_the_official_forward(official, converted_model):
    input_ids, text_mask, pixel_values, video_mask = _inputs()
    with torch.no_grad():
        text = converted_model.get_text_features(input_ids, text_mask.long())
        video = converted_model.get_video_features(pixel_values, video_mask.long())
        reference_text = official_text_tokens(official, input_ids)
        frames = official_frame_embeddings(official, pixel_values)
        reference_video = official_frame_tokens(official, frames, video_mask)
    torch.testing.assert_close(text.level_tokens[0][text_mask], reference_text[text_mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(video.level_tokens[0][video_mask], reference_video[video_mask], atol=1e-4, rtol=1e-4)


def test_converted_entity_score_equals_the_official_weighted_token_interaction(official, converted_model):
    input_ids, text_mask, pixel_values, video_mask = _inputs()
    with torch.no_grad():
        output = converted_model(input_ids, pixel_values, text_mask.long(), video_mask.long(), return_loss=False)
        text_tokens = official_text_tokens(official, input_ids)
        video_tokens = official_frame_tokens(official, official_frame_embeddings(official, pixel_values), video_mask)
        reference = reference_entity_similarity(official, text_tokens, text_mask, video_tokens, video_mask)
    torch.testing.assert_close(output.similarity_per_level[0], reference, atol=1e-4, rtol=1e-4)
    scale = official["clip.logit_scale"].exp()
    torch.testing.assert_close(output.logits_per_text, scale * reference, atol=1e-3, rtol=1e-4)


VIDEO_RATIOS, TEXT_RATIOS = (0.5, 0.5), (0.25, 0.5)
"""Cluster rates of the every-level checks: 10 words -> 3 phrases -> 2 paragraphs, 6 frames -> 3 clips -> 2
segments, so that the second merge's convolution reads three tokens of each modality in an order."""


def _full_length_inputs(seed: int = 11):
    """Captions that fill all WORDS positions and videos with all FRAMES frames: without padding, which the official
    code lets into its merges (see docs/sharing.md)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB - 2, (4, WORDS), generator=g)
    input_ids[:, 0], input_ids[:, -1] = VOCAB - 2, VOCAB - 1
    return input_ids, torch.randn(4, FRAMES, 3, IMAGE, IMAGE, generator=g)


def official_level_similarities(sd, input_ids, pixel_values):
    """Entity, action and event similarities of every (text, video) pair, computed as the official forward does."""
    everything = torch.ones(pixel_values.shape[:2], dtype=torch.bool)
    text = official_text_tokens(sd, input_ids)
    video = official_frame_tokens(sd, official_frame_embeddings(sd, pixel_values), everything)
    levels = [reference_entity_similarity(sd, text, torch.ones_like(input_ids, dtype=torch.bool), video, everything)]
    for index, suffix in ((0, "0"), (1, "1")):
        text = official_token_merge(sd, f"t_ctm{index}.", f"t_block{index}.", text, TEXT_RATIOS[index])
        video = official_token_merge(sd, f"v_ctm{index}.", f"v_block{index}.", video, VIDEO_RATIOS[index])
        levels.append(reference_level_similarity(sd, suffix, text, video))
    return levels


def _converted(official, **overrides):
    config = official_config(
        official,
        num_frames=FRAMES,
        max_words=WORDS,
        head_dim=HEAD_DIM,
        video_cluster_ratios=VIDEO_RATIOS,
        text_cluster_ratios=TEXT_RATIOS,
        **overrides,
    )
    model = HBIForRetrieval(config)
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    return model.eval()


def test_converted_model_reproduces_the_official_code_at_every_level_and_fused(official):
    weights = [0.4, 0.4, 0.2]
    model = _converted(official, similarity_level_weights=weights)
    assert model.config.merged_token_order == "score"
    input_ids, pixel_values = _full_length_inputs()
    with torch.no_grad():
        output = model(input_ids, pixel_values, return_loss=False)
        reference = official_level_similarities(official, input_ids, pixel_values)
    for level, (ours, theirs) in enumerate(zip(output.similarity_per_level, reference, strict=True)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5, msg=f"level {level}")
    fused = sum(w * level for w, level in zip(weights, reference, strict=True))
    torch.testing.assert_close(
        output.logits_per_text, official["clip.logit_scale"].exp() * fused, atol=1e-4, rtol=1e-5
    )


def test_temporal_order_of_merged_tokens_changes_the_event_level_but_not_the_others(official):
    input_ids, pixel_values = _full_length_inputs()
    with torch.no_grad():
        reference = official_level_similarities(official, input_ids, pixel_values)
        temporal = _converted(official, merged_token_order="temporal", similarity_level_weights=[1, 1, 1])(
            input_ids, pixel_values, return_loss=False
        )
    for level in (0, 1):  # the action level's similarity does not depend on the order of its tokens
        torch.testing.assert_close(temporal.similarity_per_level[level], reference[level], atol=1e-5, rtol=1e-5)
    assert (temporal.similarity_per_level[2] - reference[2]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "official_prefix,module_path",
    [
        ("banzhafmodel.", "banzhaf_heads.0"),
        ("banzhafmodel0.", "banzhaf_heads.1"),
        ("banzhafmodel1.", "banzhaf_heads.2"),
        ("banzhafteacher.", "banzhaf_teacher.head"),
    ],
)
def test_converted_banzhaf_modules_equal_the_official_module(official, converted_model, official_prefix, module_path):
    similarity = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    module = converted_model.alignment.get_submodule(module_path)
    with torch.no_grad():
        ours = module(similarity, torch.ones_like(similarity, dtype=torch.bool))
        reference = official_banzhaf_module(official, official_prefix, similarity)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_estimator_checkpoint_converts_and_matches_the_official_module(tmp_path):
    official = _banzhaf("", torch.Generator().manual_seed(5))
    assert len(official) == 12
    converted = convert_official_estimator_state_dict(official)
    assert set(converted) == {f"head.{name}" for name in ("query", "key", "value")} | {
        f"head.{part}.{kind}" for part in ("encoder", "decoder") for kind in ("weight", "bias")
    }
    estimator = convert_official_estimator_checkpoint(
        _save(official, tmp_path / "pytorch_model.bin.5"), tmp_path / "out"
    )
    reloaded = HBIBanzhafEstimator.from_pretrained(tmp_path / "out")
    similarity = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        reference = official_banzhaf_module(official, "", similarity)
        torch.testing.assert_close(estimator(similarity).interaction, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reloaded(similarity).interaction, reference, atol=1e-5, rtol=1e-5)


def test_unknown_official_key_is_refused_with_its_name(official):
    with_lstm = dict(official, **{"lstm_visual.weight_ih_l0": torch.zeros(4 * WIDTH, WIDTH)})
    with pytest.raises(HBIConversionError, match="lstm_visual.weight_ih_l0"):
        convert_official_state_dict(with_lstm)


def test_missing_official_key_is_refused_with_its_name(official, tmp_path):
    incomplete = {k: v for k, v in official.items() if k != "v_block1.attn.kv.bias"}
    path = _save(incomplete, tmp_path / "pytorch_model.bin.0")
    with pytest.raises(HBIConversionError, match="video_merges.1.refinement.kv_proj.bias"):
        convert_official_checkpoint(path, num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM)


def test_wrapped_checkpoint_is_refused(official, tmp_path):
    path = _save({"state_dict": official, "epoch": torch.tensor(3)}, tmp_path / "wrapped.pth")
    with pytest.raises(HBIConversionError, match="not a flat state dict"):
        convert_official_checkpoint(path, num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM)


def test_converted_folder_loads_with_auto_classes(official, converted_model, tmp_path):
    path = _save(official, tmp_path / "best.pth")
    convert_official_checkpoint(path, tmp_path / "hf", num_frames=FRAMES, max_words=WORDS, head_dim=HEAD_DIM)
    retrieval = AutoModelForVideoTextRetrieval.from_pretrained(tmp_path / "hf").eval()
    base = HBIModel.from_pretrained(tmp_path / "hf").eval()
    input_ids, text_mask, pixel_values, video_mask = _inputs()
    with torch.no_grad():
        expected = converted_model(input_ids, pixel_values, text_mask.long(), video_mask.long()).logits_per_text
        got = retrieval(input_ids, pixel_values, text_mask.long(), video_mask.long()).logits_per_text
        got_base = base(input_ids, pixel_values, text_mask.long(), video_mask.long()).logits_per_text
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_base, expected)


def test_conversion_script_writes_a_loadable_folder(official, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "convert_script", REPO_ROOT / "scripts/convert_official_checkpoint.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = _save(official, tmp_path / "pytorch_model.bin.4")
    script.main(
        [
            "--checkpoint",
            str(path),
            "--output_dir",
            str(tmp_path / "out"),
            "--num_frames",
            str(FRAMES),
            "--max_words",
            str(WORDS),
            "--head_dim",
            str(HEAD_DIM),
        ]
    )
    model = AutoModelForVideoTextRetrieval.from_pretrained(tmp_path / "out")
    assert model.config.num_frames == FRAMES and model.config.text_cluster_ratios == [0.25, 0.5]
