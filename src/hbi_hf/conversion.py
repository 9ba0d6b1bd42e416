"""Conversion of checkpoints written by the official HBI code (github.com/jpthu17/HBI, CVPR 2023 version).

The official retrieval checkpoint is a plain `state_dict()` of its `HBI` module: OpenAI-CLIP parameter names under
`clip.`, the temporal transformer `transformerClip`, the WTI weight MLPs `{text,video}_weight_fc{,0,1}`, the Banzhaf
modules `banzhafmodel{,0,1}` / `banzhafteacher` and the token merges `{t,v}_ctm{0,1}` / `{t,v}_block{0,1}`
(docs/sharing.md, "Converting the official checkpoints"). The estimator checkpoint holds the 12 tensors of one Banzhaf module
without prefix. Both carry no configuration, and the CLIP tensors of a GPU-trained checkpoint are fp16.

[`convert_official_state_dict`] and [`convert_official_estimator_state_dict`] are pure functions from the official
state dict to the state dict of [`HBIForRetrieval`] / [`HBIBanzhafEstimator`]: every official key is either mapped or
explicitly dropped (the BatchNorm of the Banzhaf modules, which the official forward never calls); anything else is
refused with an error naming the key.
"""

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_hbi import HBIBanzhafEstimatorConfig, HBIConfig
from .modeling_hbi import HBIBanzhafEstimator, HBIForRetrieval

logger = logging.get_logger(__name__)

OFFICIAL_HEAD_DIM = 64
"""OpenAI CLIP (and the official temporal transformer) use `width // 64` attention heads."""
OFFICIAL_MERGE_HEADS = 8
"""The official token-merge refinement (`TCBlock`) has 8 heads whatever the width."""
OFFICIAL_RETRIEVAL_CLUSTER_RATIOS = (0.25, 0.5)
"""Cluster rates of the official retrieval runs (`--t_rate0/1`, `--v_rate0/1`), not stored in the checkpoint."""

_LEVEL_SUFFIXES = {"": 0, "0": 1, "1": 2}
"""Official per-level suffix (entity, action, event) -> level index."""

# One OpenAI-CLIP residual block (also the official temporal transformer's block) -> one HF `CLIPEncoderLayer`.
_BLOCK_RENAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_CLIP_RENAMES = {
    "logit_scale": "logit_scale",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_CLIP_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_BANZHAF_RENAMES = {
    "Q": "query",
    "K": "key",
    "V": "value",
    "cnn1.weight": "encoder.weight",
    "cnn1.bias": "encoder.bias",
    "cnn2.weight": "decoder.weight",
    "cnn2.bias": "decoder.bias",
}
_BANZHAF_UNUSED = ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
_MERGE_RENAMES = {
    "ctm": {
        "conv.conv.weight": "conv.weight",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
        "score.weight": "score.weight",
        "score.bias": "score.bias",
    },
    "block": {
        "norm1.weight": "refinement.norm.weight",
        "norm1.bias": "refinement.norm.bias",
        "attn.q.weight": "refinement.q_proj.weight",
        "attn.q.bias": "refinement.q_proj.bias",
        "attn.kv.weight": "refinement.kv_proj.weight",
        "attn.kv.bias": "refinement.kv_proj.bias",
        "attn.proj.weight": "refinement.out_proj.weight",
        "attn.proj.bias": "refinement.out_proj.bias",
    },
}


class HBIConversionError(ValueError):
    """An official checkpoint that cannot be converted without losing or inventing weights."""


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official checkpoint (`pytorch_model.bin.<epoch>`, `best.pth`, estimator epoch file) on the CPU with
    `weights_only=True`. A `module.` prefix left by DataParallel is removed; anything but a flat name -> tensor
    mapping is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()
    ):
        raise HBIConversionError(
            f"{path} is not a flat state dict (name -> tensor) as the official code saves; got {type(payload).__name__}"
            + (f" with keys {sorted(payload)[:5]}" if isinstance(payload, Mapping) else "")
        )
    if payload and all(k.startswith("module.") for k in payload):
        logger.info("%s: removing the DataParallel prefix 'module.' from every key", path)
        payload = {k[len("module.") :]: v for k, v in payload.items()}
    return dict(payload)


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def _split_in_proj(prefix: str, suffix: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """`attn.in_proj_{weight,bias}` -> `self_attn.{q,k,v}_proj.{weight,bias}` (rows in q, k, v order)."""
    kind = suffix.rsplit("_", 1)[-1]
    if tensor.shape[0] % 3 != 0:
        raise HBIConversionError(f"{prefix}attn.in_proj_{kind} has {tensor.shape[0]} rows; expected a multiple of 3")
    query, key, value = tensor.chunk(3, dim=0)
    return {
        f"{prefix}self_attn.q_proj.{kind}": query,
        f"{prefix}self_attn.k_proj.{kind}": key,
        f"{prefix}self_attn.v_proj.{kind}": value,
    }


def _convert_block(official_key: str, block_suffix: str, target_prefix: str, tensor: torch.Tensor):
    if block_suffix in ("attn.in_proj_weight", "attn.in_proj_bias"):
        return _split_in_proj(target_prefix, block_suffix, tensor)
    if block_suffix in _BLOCK_RENAMES:
        return {target_prefix + _BLOCK_RENAMES[block_suffix]: tensor}
    raise HBIConversionError(f"unknown residual-block parameter {official_key!r}")


def _convert_clip(official_key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    name = official_key[len("clip.") :]
    block = re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)", name)
    if block:
        tower = "vision_model" if block.group(1) else "text_model"
        return _convert_block(
            official_key, block.group(3), f"hbi.clip.{tower}.encoder.layers.{block.group(2)}.", tensor
        )
    if name in _CLIP_RENAMES:
        return {"hbi.clip." + _CLIP_RENAMES[name]: tensor}
    if name in _CLIP_TRANSPOSED:
        return {"hbi.clip." + _CLIP_TRANSPOSED[name]: tensor.t().contiguous()}
    raise HBIConversionError(f"unknown CLIP parameter {official_key!r}")


def _convert_banzhaf(official_key: str, module_prefix: str, suffix: str, tensor: torch.Tensor):
    if suffix in _BANZHAF_UNUSED:
        return {}
    if suffix in _BANZHAF_RENAMES:
        return {module_prefix + _BANZHAF_RENAMES[suffix]: tensor}
    raise HBIConversionError(f"unknown Banzhaf-module parameter {official_key!r}")


def _convert_non_clip(official_key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    if official_key == "frame_position_embeddings.weight":
        return {"hbi.temporal.frame_position_embeddings.weight": tensor}
    match = re.fullmatch(r"transformerClip\.resblocks\.(\d+)\.(.+)", official_key)
    if match:
        return _convert_block(official_key, match.group(2), f"hbi.temporal.layers.{match.group(1)}.", tensor)
    match = re.fullmatch(r"(text|video)_weight_fc(|0|1)\.([02])\.(weight|bias)", official_key)
    if match:
        modality, level, layer, kind = match.groups()
        fc = "fc1" if layer == "0" else "fc2"
        return {f"hbi.levels.{_LEVEL_SUFFIXES[level]}.{modality}_weight.{fc}.{kind}": tensor}
    match = re.fullmatch(r"banzhafmodel(|0|1)\.(.+)", official_key)
    if match:
        prefix = f"alignment.banzhaf_heads.{_LEVEL_SUFFIXES[match.group(1)]}."
        return _convert_banzhaf(official_key, prefix, match.group(2), tensor)
    match = re.fullmatch(r"banzhafteacher\.(.+)", official_key)
    if match:
        return _convert_banzhaf(official_key, "alignment.banzhaf_teacher.head.", match.group(1), tensor)
    match = re.fullmatch(r"([tv])_(ctm|block)([01])\.(.+)", official_key)
    if match:
        modality, part, index, suffix = match.groups()
        renames = _MERGE_RENAMES[part]
        if suffix not in renames:
            raise HBIConversionError(f"unknown token-merge parameter {official_key!r}")
        merges = "text_merges" if modality == "t" else "video_merges"
        return {f"hbi.{merges}.{index}.{renames[suffix]}": tensor}
    raise HBIConversionError(
        f"official key {official_key!r} has no counterpart in HBIForRetrieval (an LSTM aggregator, the VideoQA heads "
        "or a different model?); refusing to drop it silently"
    )


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """
    Map an official HBI retrieval state dict onto [`HBIForRetrieval`] (with `representation_reconstruction=False`).

    * `clip.*` -> `hbi.clip.*` in Hugging Face `CLIPModel` naming: `in_proj_{weight,bias}` split into q, k, v; the
      projections `text_projection` / `visual.proj` (used as `x @ P`) transposed into `nn.Linear` weights;
    * `frame_position_embeddings` / `transformerClip.resblocks.N` -> `hbi.temporal.frame_position_embeddings` /
      `hbi.temporal.layers.N` (the same block renaming);
    * `{text,video}_weight_fc{,0,1}.{0,2}` -> `hbi.levels.{0,1,2}.{text,video}_weight.fc{1,2}`;
    * `banzhafmodel{,0,1}` / `banzhafteacher` -> `alignment.banzhaf_heads.{0,1,2}` / `alignment.banzhaf_teacher.head`
      with `cnn1 -> encoder`, `Q, K, V -> query, key, value` (both compute `x @ Q`), `cnn2 -> decoder`; their unused
      BatchNorm (`bn.*`) is dropped;
    * `{t,v}_ctm{0,1}` -> `hbi.{text,video}_merges.{0,1}` (`conv.conv -> conv`, `norm`, `score`) and
      `{t,v}_block{0,1}` -> `hbi.{text,video}_merges.{0,1}.refinement` (`norm1 -> norm`, `attn.q -> q_proj`,
      `attn.kv -> kv_proj`, `attn.proj -> out_proj`).

    Every floating tensor is cast to fp32. Raises [`HBIConversionError`] on a key it does not know.
    """
    converted: dict[str, torch.Tensor] = {}
    for official_key, tensor in state_dict.items():
        convert: Callable = _convert_clip if official_key.startswith("clip.") else _convert_non_clip
        converted.update(convert(official_key, _as_float32(tensor)))
    return converted


def convert_official_estimator_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the 12-key official estimator checkpoint (`banzhaf_estimator.py`) onto [`HBIBanzhafEstimator`]:
    `Q, K, V -> head.{query,key,value}`, `cnn1 -> head.encoder`, `cnn2 -> head.decoder`; `bn.*` (never used by the
    official forward) is dropped."""
    converted: dict[str, torch.Tensor] = {}
    for official_key, tensor in state_dict.items():
        converted.update(_convert_banzhaf(official_key, "head.", official_key, _as_float32(tensor)))
    return converted


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.attn\.in_proj_weight")
    return len({m.group(1) for key in state_dict if (m := pattern.fullmatch(key))})


def _require(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise HBIConversionError(f"official checkpoint lacks {key!r}; is this an HBI retrieval checkpoint?")
    return state_dict[key]


def official_config(
    state_dict: Mapping[str, torch.Tensor],
    num_frames: int,
    max_words: int,
    cluster_mode: str = "ratio",
    video_cluster_ratios: tuple[float, float] = OFFICIAL_RETRIEVAL_CLUSTER_RATIOS,
    text_cluster_ratios: tuple[float, float] = OFFICIAL_RETRIEVAL_CLUSTER_RATIOS,
    head_dim: int = OFFICIAL_HEAD_DIM,
    merge_num_attention_heads: int = OFFICIAL_MERGE_HEADS,
    **overrides,
) -> HBIConfig:
    """
    The [`HBIConfig`] of an official retrieval checkpoint. Widths, depths, vocabulary, image and patch sizes are read
    from tensor shapes; what the checkpoint does not store (frames, words, cluster settings) must be given, as on the
    official command line. The result is HBI (CVPR): `representation_reconstruction=False`, CLIP's learnable logit
    scale, merged tokens in the official order (`merged_token_order="score"`: by decreasing cluster-centre score,
    which the event level depends on) and the official `[1, 0, 0]` level fusion.

    Args:
        state_dict: the official state dict (before conversion).
        num_frames, max_words (`int`): `--max_frames`, `--max_words` of the official run.
        cluster_mode (`str`): `"ratio"` (official) or `"count"` (then pass `video_cluster_counts` / `text_cluster_counts`
            in `overrides`).
        video_cluster_ratios, text_cluster_ratios: `--v_rate0/1`, `--t_rate0/1` (retrieval: 0.25, 0.5).
        head_dim (`int`): attention head width of the CLIP towers and the temporal transformer (OpenAI: 64).
        merge_num_attention_heads (`int`): heads of the merge refinement (official: 8).
        overrides: any other [`HBIConfig`] field.
    """
    text_width = _require(state_dict, "clip.ln_final.weight").shape[0]
    vision_width, _, patch, _ = _require(state_dict, "clip.visual.conv1.weight").shape
    vision_positions = _require(state_dict, "clip.visual.positional_embedding").shape[0]
    grid = math.isqrt(vision_positions - 1)
    if grid * grid != vision_positions - 1:
        raise HBIConversionError(
            f"clip.visual.positional_embedding has {vision_positions} rows; expected 1 + a square"
        )
    vocab_size = _require(state_dict, "clip.token_embedding.weight").shape[0]
    text_config = dict(
        hidden_size=text_width,
        intermediate_size=_require(state_dict, "clip.transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        num_attention_heads=text_width // head_dim,
        num_hidden_layers=_count_blocks(state_dict, "clip.transformer.resblocks."),
        max_position_embeddings=_require(state_dict, "clip.positional_embedding").shape[0],
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        hidden_act="quick_gelu",
    )
    vision_config = dict(
        hidden_size=vision_width,
        intermediate_size=_require(state_dict, "clip.visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0],
        num_attention_heads=vision_width // head_dim,
        num_hidden_layers=_count_blocks(state_dict, "clip.visual.transformer.resblocks."),
        image_size=patch * grid,
        patch_size=patch,
        hidden_act="quick_gelu",
    )
    teacher_query = _require(state_dict, "banzhafteacher.Q")
    settings = dict(
        text_config=text_config,
        vision_config=vision_config,
        estimator_config=dict(
            hidden_size=teacher_query.shape[0],
            kernel_size=_require(state_dict, "banzhafteacher.cnn1.weight").shape[-1],
            is_trained=True,
        ),
        banzhaf_teacher="estimator",
        projection_dim=_require(state_dict, "clip.text_projection").shape[1],
        logit_scale_init_value=float(_require(state_dict, "clip.logit_scale")),
        num_frames=num_frames,
        max_words=max_words,
        temporal_num_layers=_count_blocks(state_dict, "transformerClip.resblocks."),
        temporal_num_attention_heads=text_width // head_dim,
        temporal_intermediate_size=_require(state_dict, "transformerClip.resblocks.0.mlp.c_fc.weight").shape[0],
        temporal_max_position_embeddings=_require(state_dict, "frame_position_embeddings.weight").shape[0],
        temporal_layer_norm_eps=1e-12,
        cluster_mode=cluster_mode,
        video_cluster_ratios=list(video_cluster_ratios),
        text_cluster_ratios=list(text_cluster_ratios),
        merge_num_attention_heads=merge_num_attention_heads,
        merged_token_order="score",
        representation_reconstruction=False,
        learnable_temperature=True,
        similarity_level_weights=[1.0, 0.0, 0.0],
    )
    settings.update(overrides)
    return HBIConfig(**settings)


def _load_strictly(model: torch.nn.Module, converted: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `converted` into `model`, refusing any missing, unexpected or mis-shaped tensor with its name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise HBIConversionError(
            f"{source} does not match {type(model).__name__}: "
            + (f"missing {len(missing)} tensors (first: {missing[:5]}); " if missing else "")
            + (f"{len(unexpected)} tensors without a place (first: {unexpected[:5]})" if unexpected else "")
        )
    for key, tensor in converted.items():
        if tensor.shape != expected[key].shape:
            raise HBIConversionError(
                f"{source}: {key} has shape {tuple(tensor.shape)}; the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(converted, strict=True)


def convert_official_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path | None = None, **config_kwargs
) -> HBIForRetrieval:
    """Read an official retrieval checkpoint, convert it, load it into [`HBIForRetrieval`] and, with `output_dir`,
    save it there (safetensors + config, and the processor: the CLIP tokenizer built offline and the video processor
    for `num_frames` and `max_words`, see [`HBIPreTrainedModel.save_pretrained`]) so that `AutoModel` /
    `AutoModelForVideoTextRetrieval` / `AutoProcessor.from_pretrained` and `hbi-hf index` load it. `config_kwargs` go
    to [`official_config`] (`num_frames` and `max_words` are required)."""
    state_dict = load_official_checkpoint(checkpoint_path)
    config = official_config(state_dict, **config_kwargs)
    model = HBIForRetrieval(config)
    _load_strictly(model, convert_official_state_dict(state_dict), str(checkpoint_path))
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


def convert_official_estimator_checkpoint(
    checkpoint_path: str | Path, output_dir: str | Path | None = None
) -> HBIBanzhafEstimator:
    """The same for an official estimator checkpoint (`banzhaf_estimator.py` epoch file) -> [`HBIBanzhafEstimator`]."""
    state_dict = load_official_checkpoint(checkpoint_path)
    query = _require(state_dict, "Q")
    config = HBIBanzhafEstimatorConfig(
        hidden_size=query.shape[0], kernel_size=_require(state_dict, "cnn1.weight").shape[-1], is_trained=True
    )
    estimator = HBIBanzhafEstimator(config)
    _load_strictly(estimator, convert_official_estimator_state_dict(state_dict), str(checkpoint_path))
    estimator.eval()
    if output_dir is not None:
        estimator.save_pretrained(output_dir)
    return estimator


__all__ = [
    "HBIConversionError",
    "convert_official_checkpoint",
    "convert_official_estimator_checkpoint",
    "convert_official_estimator_state_dict",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "official_config",
]
