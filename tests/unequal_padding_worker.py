"""One process of the multi-process evaluation of tests/test_distributed_evaluation.py in which every process pads
differently: process r pads captions to `max_words + 3 r` tokens (a caption longer than `max_words` is still cut there) and videos to `num_frames + 2 r` frames (the extra
positions invalid). It then runs `scripts/train_retrieval.py`'s evaluation as tests/distributed_worker.py does."""

import os

import torch
from distributed_worker import main

from hbi_hf import HBIProcessor, HBIVideoProcessor

RANK = int(os.environ["RANK"])
tokenize, preprocess = HBIProcessor.tokenize, HBIVideoProcessor.preprocess


def longer_captions(self, text, return_tensors="pt", **text_kwargs):
    batch = tokenize(self, text, return_tensors, **text_kwargs)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    batch["input_ids"] = torch.cat([ids, ids.new_full((ids.shape[0], 3 * RANK), self.tokenizer.pad_token_id)], 1)
    batch["attention_mask"] = torch.cat([mask, mask.new_zeros(mask.shape[0], 3 * RANK)], 1)
    return batch


def longer_videos(self, videos, **kwargs):
    batch = preprocess(self, videos, **kwargs)
    pixels, mask = batch["pixel_values"], batch["video_mask"]
    batch["pixel_values"] = torch.cat([pixels, pixels.new_zeros(pixels.shape[0], 2 * RANK, *pixels.shape[2:])], 1)
    batch["video_mask"] = torch.cat([mask, mask.new_zeros(mask.shape[0], 2 * RANK)], 1)
    return batch


HBIProcessor.tokenize, HBIVideoProcessor.preprocess = longer_captions, longer_videos

if __name__ == "__main__":
    main()
