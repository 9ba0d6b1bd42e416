"""A small index whose correct hits are known: coloured clips and a tiny HBI model trained until it ranks each clip
first for its own caption (checked with the Python searcher before any page is tested), with the package's real
processor (CLIP tokenizer + HBIVideoProcessor) saved in the model folder."""

from pathlib import Path

import av
import numpy as np
import torch
from conftest import tiny_hbi_config

from hbi_hf import HBIForRetrieval
from hbi_hf.search_index import HBIVideoSearcher, build_index

NUM_FRAMES, MAX_WORDS, SIZE = 6, 10, 32
CAPTIONS = {
    "red.mp4": ("a red square", (230, 30, 30)),
    "green.mp4": ("a green field", (30, 200, 40)),
    "blue.mp4": ("a blue sky", (20, 40, 220)),
    "clips/yellow sun é.webm": ("a yellow sun", (240, 220, 20)),
}
"""Video path -> (caption, colour): H.264 in mp4 and VP8 in WebM, which a browser plays."""
OUTSIDE_LINK = "linked/outside.mp4"
"""A symbolic link in the video folder to a clip outside it: indexed, never served."""


def write_clip(path: Path, colour: tuple[int, int, int], frames: int = 16, fps: int = 4) -> None:
    """A small clip (`frames` frames at `fps`, 64x48; H.264 for .mp4, VP8 for .webm) of `colour` with a white bar
    moving right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx" if path.suffix == ".webm" else "libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), colour, dtype=np.uint8)
            image[:, 4 * i : 4 * i + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build_trusted_index(root: Path, steps: int = 30) -> tuple[Path, Path, Path]:
    """Videos under `root/videos`, the trained model in `root/model`, the index in `root/index`.

    Raises:
        `AssertionError`: the trained model does not rank every clip first for its caption (then no test of the
            page could say which hit is right).
    """
    from hbi_hf.data.tokenizer import build_clip_tokenizer
    from hbi_hf.processing_hbi import HBIProcessor
    from hbi_hf.video_processing_hbi import HBIVideoProcessor

    videos, model_dir, index_dir = root / "videos", root / "model", root / "index"
    for path, (_, colour) in CAPTIONS.items():
        write_clip(videos / path, colour)
    write_clip(root / "outside" / "secret.mp4", (200, 30, 200))
    (videos / OUTSIDE_LINK).parent.mkdir()
    (videos / OUTSIDE_LINK).symlink_to(root / "outside" / "secret.mp4")
    tokenizer = build_clip_tokenizer()
    config = tiny_hbi_config(num_frames=NUM_FRAMES, max_words=MAX_WORDS)
    config.text_config.update(
        dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    video_processor = HBIVideoProcessor(
        num_frames=NUM_FRAMES,
        sampling_mode="uniform",
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
    )
    processor = HBIProcessor(video_processor, tokenizer, max_words=MAX_WORDS)
    torch.manual_seed(0)
    model = HBIForRetrieval(config)
    paths = [*CAPTIONS, OUTSIDE_LINK]
    batch = processor(
        text=[CAPTIONS[p][0] if p in CAPTIONS else "a purple secret" for p in paths],
        videos=[str(videos / p) for p in paths],
        return_tensors="pt",
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    labels = torch.arange(len(paths))
    model.train()
    for _ in range(steps):  # the symmetric contrastive loss on the fused score alone: 4 pairs are learnt in seconds
        logits = model.hbi(**batch).logits_per_text
        loss = torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(
            logits.t(), labels
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    build_index(videos, index_dir, model_dir, show_progress=False)
    searcher = HBIVideoSearcher(index_dir)
    for path, (caption, _) in CAPTIONS.items():
        ranked = [hit.path for hit in searcher.search(caption, top_k=len(paths))]
        assert ranked[0] == path, f"the trained model ranks {ranked} for {caption!r}: the index cannot be trusted"
    return videos, model_dir, index_dir
