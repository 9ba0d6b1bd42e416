"""Stand-ins for the data package in training tests: a tiny HBI config, retrieval rows, and a processor / collator
that turn them into tensors without decoding any video (video `k` is a fixed random tensor seeded by `k`)."""

import json
from pathlib import Path

import torch
from conftest import TINY_TEXT, tiny_hbi_config
from datasets import Dataset

from hbi_hf import HBIConfig

NUM_FRAMES = 4
MAX_WORDS = 8
IMAGE_SIZE = 32
VOCAB_SIZE = 100
PAD, BOS, EOS = 0, 98, 99


def tiny_config(**overrides) -> HBIConfig:
    """The shared tiny configuration (conftest) at the stand-ins' frames and words."""
    settings = dict(
        text_config=dict(TINY_TEXT, max_position_embeddings=MAX_WORDS),
        temporal_num_layers=1,
        num_frames=NUM_FRAMES,
        max_words=MAX_WORDS,
        video_cluster_counts=[2, 1],
        text_cluster_counts=[3, 2],
    )
    settings.update(overrides)
    return tiny_hbi_config(**settings)


def retrieval_rows(num_videos: int, captions_per_video: int = 1) -> Dataset:
    """Rows `{"video_id", "video_path", "caption"}`; caption `"k"` (and variants) describes video `k`."""
    rows = [
        {"video_id": f"video{k}", "video_path": f"/nonexistent/video{k}.mp4", "caption": f"{k} {c}"}
        for k in range(num_videos)
        for c in range(captions_per_video)
    ]
    return Dataset.from_list(rows)


class StandInProcessor:
    """Callable like `HBIProcessor`: `text=` -> input_ids / attention_mask, `videos=` -> pixel_values / video_mask."""

    def __call__(self, text=None, videos=None, return_tensors="pt"):
        batch = {}
        if text is not None:
            ids = torch.full((len(text), MAX_WORDS), PAD)
            for row, caption in enumerate(text):
                words = [1 + int(word) % (VOCAB_SIZE - 3) for word in caption.split()]
                tokens = [BOS, *words][: MAX_WORDS - 1] + [EOS]
                ids[row, : len(tokens)] = torch.tensor(tokens)
            batch["input_ids"] = ids
            batch["attention_mask"] = (ids != PAD).long()
        if videos is not None:
            pixels = []
            for path in videos:
                generator = torch.Generator().manual_seed(int(Path(path).stem.removeprefix("video")))
                pixels.append(torch.randn(NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator))
            batch["pixel_values"] = torch.stack(pixels)
            batch["video_mask"] = torch.ones(len(videos), NUM_FRAMES, dtype=torch.long)
        return batch

    def save_pretrained(self, save_directory, **kwargs):
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "standin_processor.json").write_text(json.dumps({"max_words": MAX_WORDS}))


class StandInCollator:
    """Rows -> the batch `HBIForRetrieval.forward` takes (the data package's `HBIRetrievalCollator` contract)."""

    def __init__(self, processor: StandInProcessor):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.processor(text=[r["caption"] for r in rows], videos=[r["video_path"] for r in rows])
