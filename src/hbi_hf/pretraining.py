"""CLIP-style contrastive pre-training of the miniature towers (`make demo`, `make ablation`; docs/banzhaf.md,
"Ablation in miniature").

The paper fine-tunes a CLIP that was pre-trained contrastively on image-caption pairs. No CLIP weights can be
downloaded here, so this module makes the closest analogue for the embedded synthetic dataset: image-caption pairs
from single frames of scenes outside the retrieval splits (split `"pretrain"` of [`sample_scenes`], its own random
stream), each caption saying what the frame shows (every visible object's size, colour, shape and position, e.g. "a
big red circle at the top left and a blue square on the right"), and a [`CLIPModel`] of the demo's tower sizes trained
on them with CLIP's symmetric contrastive loss and learnable temperature. The result is saved as an ordinary CLIP
folder (`config.json`, `model.safetensors`, the CLIP tokenizer), so `HBIForRetrieval.from_clip(folder)` loads it
exactly as it loads `openai/clip-vit-base-patch32`.

The folder is cached like the embedded dataset: under `$HBI_HF_CACHE` (default `~/.cache/hbi_hf`) in `pretrained/`,
named by the recipe's hash ([`pretraining_recipe`]: every argument, this module's version and the generator's), with
the recipe written last (`pretraining.json`), so an interrupted run is never reused and a changed recipe builds a new
folder. A folder is only ever replaced when this package made it (the `.hbi_hf_generated` marker).
"""

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, get_cosine_schedule_with_warmup
from transformers.utils import logging

from .data.synthetic import (
    DURATION_SECONDS,
    FPS,
    FRAME_SIZE,
    GENERATED_MARKER,
    GENERATOR_VERSION,
    HBISyntheticObjectState,
    HBISyntheticScene,
    _replace_generated_folder,
    default_cache_dir,
    frame_objects,
    render_frame,
    sample_scenes,
)

logger = logging.get_logger(__name__)

PRETRAINING_VERSION = 1
"""Bumped whenever the pairs or the training loop change, so that cached towers are rebuilt."""
PRETRAINING_SPLIT = "pretrain"
"""The split name of the pre-training scenes in [`sample_scenes`] (its own random stream)."""
RECIPE_FILE = "pretraining.json"
"""The recipe and the measured figures of a pre-trained folder; written last."""
CLIP_VOCAB_SIZE = 49408
CLIP_BOS_TOKEN_ID = 49406
CLIP_EOS_TOKEN_ID = 49407
"""Start and end tokens of the CLIP vocabulary; the end token also pads (as `build_clip_tokenizer()` does)."""


@dataclass
class HBIPretrainingArguments:
    """Tower sizes (the demo's) and the pre-training schedule."""

    hidden_size: int = field(default=128, metadata={"help": "Width of both CLIP towers and of the joint space."})
    num_layers: int = field(default=2, metadata={"help": "Layers of each CLIP tower."})
    image_size: int = field(default=64, metadata={"help": "Frame side in pixels."})
    patch_size: int = field(default=16, metadata={"help": "ViT patch side in pixels."})
    max_words: int = field(default=24, metadata={"help": "Tokens per caption."})
    num_scenes: int = field(default=1000, metadata={"help": "Pre-training scenes (outside the retrieval splits)."})
    frames_per_scene: int = field(default=4, metadata={"help": "Single frames taken from each scene, captioned."})
    num_steps: int = field(default=600, metadata={"help": "Optimisation steps."})
    batch_size: int = field(default=128, metadata={"help": "Image-caption pairs per step (in-batch negatives)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (after 10 % warm-up, cosine)."})
    weight_decay: float = field(default=0.2, metadata={"help": "Weight decay (never on biases, norms, logit scale)."})
    num_heldout_pairs: int = field(
        default=256, metadata={"help": "Pairs of further scenes on which the result is measured (not trained on)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the scenes, the frames and the initialisation."})


def clip_config(args: HBIPretrainingArguments) -> CLIPConfig:
    """The [`CLIPConfig`] of towers of `args.hidden_size` width (heads of 32 dimensions, feed-forward 4 x width) over the
    CLIP vocabulary, with a joint space of the same width."""
    width = args.hidden_size
    tower = dict(
        hidden_size=width,
        intermediate_size=4 * width,
        num_attention_heads=max(1, width // 32),
        num_hidden_layers=args.num_layers,
    )
    text = dict(
        tower,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=max(77, args.max_words),
        bos_token_id=CLIP_BOS_TOKEN_ID,
        eos_token_id=CLIP_EOS_TOKEN_ID,
        pad_token_id=CLIP_EOS_TOKEN_ID,
    )
    vision = dict(tower, image_size=args.image_size, patch_size=args.patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


def _position_phrase(obj: HBISyntheticObjectState) -> str:
    column = "left" if obj.x < FRAME_SIZE / 3 else "right" if obj.x > 2 * FRAME_SIZE / 3 else None
    row = "top" if obj.y < FRAME_SIZE / 3 else "bottom" if obj.y > 2 * FRAME_SIZE / 3 else None
    if row and column:
        return f"at the {row} {column}"
    if row:
        return f"at the {row}"
    if column:
        return f"on the {column}"
    return "in the middle"


def frame_caption(objects: list[HBISyntheticObjectState], rng: np.random.Generator) -> str:
    """A caption of a single frame from its visible objects ([`frame_objects`], at least one): each object's size
    ("big" once grown by 40 % or more), colour, shape and position (thirds of the frame), in random order.

    Raises:
        `ValueError`: `objects` is empty (an empty frame has nothing to caption).
    """
    if not objects:
        raise ValueError("frame_caption needs at least one visible object")
    phrases = []
    for obj in objects:
        article = "an" if obj.colour[0] in "aeiou" else "a"
        size = "big " if obj.relative_size >= 1.4 else ""
        article = "a" if size else article
        phrases.append(f"{article} {size}{obj.colour} {obj.shape} {_position_phrase(obj)}")
    order = rng.permutation(len(phrases))
    return " and ".join(phrases[i] for i in order)


def pretraining_pairs(
    scenes: list[HBISyntheticScene], frames_per_scene: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """Single frames of `scenes` and their captions: up to `frames_per_scene` distinct frames per scene, drawn at
    random (seeded by `seed`) among those showing at least one object.

    Returns:
        `(frames, captions)`: `(pairs, 64, 64, 3)` uint8 RGB frames and one caption each.

    Raises:
        `ValueError`: a scene of a retrieval split (train or test): pre-training must not see them.
    """
    inside = sorted({scene.split for scene in scenes} & {"train", "test"})
    if inside:
        raise ValueError(f"pre-training pairs must come from scenes outside the retrieval splits; got {inside}")
    rng = np.random.default_rng([seed, 11])
    frames, captions = [], []
    for scene in scenes:
        indices = [int(i) for i in rng.permutation(FPS * DURATION_SECONDS) if frame_objects(scene, int(i))]
        for index in indices[:frames_per_scene]:
            frames.append(render_frame(scene, index))
            captions.append(frame_caption(frame_objects(scene, index), rng))
    return np.stack(frames), captions


def normalize_frames(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """`(n, H, W, 3)` uint8 frames -> `(n, 3, image_size, image_size)` pixel values, exactly as [`HBIVideoProcessor`]
    makes them from decoded frames (bicubic resize with Pillow, centre crop, CLIP's mean and standard deviation)."""
    from .video_processing_hbi import HBIVideoProcessor

    processor = HBIVideoProcessor(
        num_frames=1,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_sample_frames=False,
    )
    return processor(videos=[frames.numpy()], return_tensors="pt")["pixel_values"][0]


def _tokenize(captions: list[str], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    from .data import build_clip_tokenizer

    tokens = build_clip_tokenizer()(
        captions, padding="max_length", truncation=True, max_length=max_words, return_tensors="pt"
    )
    return tokens["input_ids"], tokens["attention_mask"]


def _parameter_groups(model: CLIPModel, weight_decay: float) -> list[dict]:
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        no_decay = parameter.ndim < 2 or "norm" in name or name == "logit_scale"
        (plain if no_decay else decayed).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@torch.no_grad()
def heldout_accuracy(model: CLIPModel, frames: np.ndarray, captions: list[str], max_words: int) -> dict[str, float]:
    """Image-to-text and text-to-image top-1 accuracy (%) among all `len(captions)` held-out pairs (chance:
    100 / pairs; identical captions count as correct)."""
    was_training = model.training
    model.eval()
    input_ids, attention_mask = _tokenize(captions, max_words)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=normalize_frames(torch.from_numpy(frames), model.config.vision_config.image_size),
    )
    model.train(was_training)
    same = torch.tensor([[a == b for b in captions] for a in captions])
    rows = torch.arange(len(captions))
    image_to_text = same[rows, output.logits_per_image.argmax(1)].float().mean().item()
    text_to_image = same[output.logits_per_text.argmax(1), rows].float().mean().item()
    return {"heldout_i2t_top1": 100 * image_to_text, "heldout_t2i_top1": 100 * text_to_image}


def pretrain_clip(args: HBIPretrainingArguments) -> tuple[CLIPModel, dict[str, float]]:
    """Train a [`CLIPModel`] of [`clip_config`]`(args)` on [`pretraining_pairs`] with CLIP's contrastive loss (random
    batches without replacement, AdamW with betas (0.9, 0.98), eps 1e-6, 10 % warm-up then cosine, gradient clipping
    1.0). Returns the model and its figures: the mean loss of the last 50 steps, held-out accuracy
    ([`heldout_accuracy`]), the final temperature and the wall time in seconds."""
    start = time.perf_counter()
    # the scenes of split "pretrain": a random stream of their own, never the train / test scenes
    scenes = sample_scenes(args.seed, args.num_scenes + args.num_heldout_pairs, PRETRAINING_SPLIT)
    frames, captions = pretraining_pairs(scenes[: args.num_scenes], args.frames_per_scene, args.seed)
    heldout = pretraining_pairs(scenes[args.num_scenes :], 1, args.seed + 1)
    input_ids, attention_mask = _tokenize(captions, args.max_words)
    frames = torch.from_numpy(frames)
    torch.manual_seed(args.seed)
    model = CLIPModel(clip_config(args))
    model.train()
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(0.9, 0.98), eps=1e-6
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, int(0.1 * args.num_steps), args.num_steps)
    generator = torch.Generator().manual_seed(args.seed)
    order, position, losses = torch.randperm(len(captions), generator=generator), 0, []
    for step in range(args.num_steps):
        if position + args.batch_size > len(order):
            order, position = torch.randperm(len(captions), generator=generator), 0
        batch = order[position : position + args.batch_size]
        position += args.batch_size
        loss = model(
            input_ids=input_ids[batch],
            attention_mask=attention_mask[batch],
            pixel_values=normalize_frames(frames[batch], args.image_size),
            return_loss=True,
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            logger.info(f"pre-training step {step + 1}/{args.num_steps}: loss {np.mean(losses[-50:]):.3f}")
    figures = {
        "pairs": len(captions),
        "final_loss": float(np.mean(losses[-50:])),
        "temperature": float(1 / model.logit_scale.detach().exp()),
        **heldout_accuracy(model, *heldout, args.max_words),
        "wall_s": time.perf_counter() - start,
    }
    return model, figures


def pretraining_recipe(args: HBIPretrainingArguments) -> dict:
    """Everything the pre-trained weights depend on: the arguments, this module's version and the generator's."""
    return {
        "pretraining_version": PRETRAINING_VERSION,
        "generator_version": GENERATOR_VERSION,
        "arguments": asdict(args),
    }


def recipe_hash(args: HBIPretrainingArguments) -> str:
    """The first 12 hex digits of the SHA-256 of the recipe's canonical JSON."""
    canonical = json.dumps(pretraining_recipe(args), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def default_pretrained_dir(args: HBIPretrainingArguments) -> Path:
    """`$HBI_HF_CACHE/pretrained/clip-w<width>-l<layers>-<recipe hash>` (default cache `~/.cache/hbi_hf`)."""
    return (
        default_cache_dir().parent / "pretrained" / f"clip-w{args.hidden_size}-l{args.num_layers}-{recipe_hash(args)}"
    )


def read_recipe(folder: str | Path) -> dict | None:
    """The recipe a complete pre-trained folder was made with, or `None` (no folder, unfinished, unreadable)."""
    try:
        return json.loads((Path(folder) / RECIPE_FILE).read_text(encoding="utf-8"))["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pretrained_towers(args: HBIPretrainingArguments, folder: str | Path | None = None) -> Path:
    """The folder of CLIP towers pre-trained with `args`: reused when it holds them, else trained ([`pretrain_clip`])
    and saved there (in a staging folder moved into place at the end, so an interrupted run leaves nothing used).

    Args:
        args ([`HBIPretrainingArguments`]): the recipe.
        folder (`str` or `Path`, *optional*): where to keep them; defaults to [`default_pretrained_dir`].

    Raises:
        `FileExistsError`: `folder` is not empty and was not made by this package (nothing in it is touched).
    """
    folder = Path(folder) if folder is not None else default_pretrained_dir(args)
    recipe = pretraining_recipe(args)
    if read_recipe(folder) == recipe:
        return folder
    if (
        folder.exists()
        and (not folder.is_dir() or any(folder.iterdir()))
        and not (folder / GENERATED_MARKER).is_file()
    ):
        raise FileExistsError(
            f"{folder} is not empty and was not made by hbi_hf (no {GENERATED_MARKER} file): refusing to write "
            "pre-trained towers there; nothing in it was changed. Give a new or empty folder."
        )
    logger.warning(f"pre-training the CLIP towers into {folder} (once; reused afterwards)")
    model, figures = pretrain_clip(args)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pretrained-", dir=folder.parent))
    try:
        (staging / GENERATED_MARKER).write_text(json.dumps({"generator": __name__, "version": PRETRAINING_VERSION}))
        model.save_pretrained(staging)
        _save_tokenizer(staging)
        (staging / RECIPE_FILE).write_text(json.dumps({"recipe": recipe, "figures": figures}, indent=2))
        _replace_generated_folder(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.warning(f"pre-trained towers saved to {folder}: {figures}")
    return folder


def _save_tokenizer(folder: Path) -> None:
    from .data import build_clip_tokenizer

    build_clip_tokenizer().save_pretrained(folder)


__all__ = [
    "HBIPretrainingArguments",
    "clip_config",
    "default_pretrained_dir",
    "frame_caption",
    "heldout_accuracy",
    "normalize_frames",
    "pretrain_clip",
    "pretrained_towers",
    "pretraining_pairs",
    "pretraining_recipe",
    "read_recipe",
    "recipe_hash",
]
