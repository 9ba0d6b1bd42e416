"""The README's "Search your own videos with the official MSR-VTT checkpoint", run as written: the three commands are
read from the README (so this test breaks when the README drifts), on a checkpoint built here in the official format
and on videos written here, and the search must rank the videos as the official formulas do on the official
tensors."""

import importlib.util
import shlex
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_conversion import (
    official_frame_embeddings,
    official_frame_tokens,
    official_retrieval_state_dict,
    official_text_tokens,
    reference_entity_similarity,
)
from transformers import AutoProcessor

from hbi_hf.cli import main as hbi_hf_main

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Search your own videos with the official MSR-VTT checkpoint"
CONVERTER = "scripts/convert_official_checkpoint.py"
WIDTH = 64
"""Tower width of the test checkpoint: one attention head of OpenAI's 64 dimensions, so that the README's command (no
`--head_dim`) converts it as it converts ViT-B/32's 512 / 768 widths."""
VIDEOS = ("beach.mp4", "kitchen.mp4", "park.mp4", "street.mp4", "holiday/boat.mp4", "holiday/hotel.avi")


def readme_commands() -> list[list[str]]:
    """The command lines of the section's `bash` block, split as a shell splits them."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert SECTION in readme, f"README.md has no section {SECTION!r}"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_readme_gives_three_commands_convert_index_search_and_the_download_link():
    convert, index, search = readme_commands()
    assert convert[:2] == ["python", CONVERTER]
    assert index[:2] == ["hbi-hf", "index"] and option(index, "--model") == option(convert, "--output_dir")
    assert search[:3] == ["hbi-hf", "search", option(index, "--out")]
    # the official MSR-VTT evaluation command's frames and words (the checkpoint does not store them)
    assert (option(convert, "--num_frames"), option(convert, "--max_words")) == ("12", "24")
    section = (REPO_ROOT / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    assert "https://drive.google.com/file/d/1hoV9vsT0-KIjjIRPIB9D4dMXwrckvSLk" in section


def write_video(path: Path, seed: int, frames: int = 16) -> None:
    """A 48x64 mpeg4 clip of coarse random colour blocks that drift from frame to frame, different for each seed."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 8, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            image = np.roll(blocks, index, axis=1).repeat(8, 0).repeat(8, 1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def run_converter(argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("convert_official_checkpoint", REPO_ROOT / CONVERTER)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(argv)


def search_table(output: str) -> list[tuple[int, str, float]]:
    """`rank  file  score` lines of `hbi-hf search` -> (rank, file, score)."""
    header, *rows = output.strip().splitlines()
    assert header.split() == ["rank", "file", "score"]
    return [(int(rank), path, float(score)) for rank, path, score in (row.split() for row in rows)]


def test_the_three_readme_commands_search_videos_with_a_converted_official_checkpoint(tmp_path, monkeypatch, capsys):
    convert, index, search = readme_commands()
    monkeypatch.chdir(tmp_path)
    official = official_retrieval_state_dict(seed=3, width=WIDTH, vision_width=WIDTH, vocab=49408)
    torch.save(official, option(convert, "--checkpoint"))
    videos = Path(index[2])
    for seed, name in enumerate(VIDEOS):
        write_video(videos / name, seed, frames=12 + 4 * seed)

    run_converter(convert[2:])
    model_dir = Path(option(convert, "--output_dir"))
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert hbi_hf_main(index[1:]) == 0
    capsys.readouterr()
    assert hbi_hf_main(search[1:]) == 0
    hits = search_table(capsys.readouterr().out)

    # the official forward (tests/test_conversion.py) on the official tensors, with the inputs of the saved processor
    processor = AutoProcessor.from_pretrained(model_dir)
    query = search[3]
    names = sorted(VIDEOS)
    inputs = processor(text=[query], videos=[str(videos / name) for name in names], return_tensors="pt")
    text_mask, video_mask = inputs["attention_mask"].bool(), inputs["video_mask"].bool()
    with torch.no_grad():
        text = official_text_tokens(official, inputs["input_ids"], head_dim=WIDTH)
        frames = official_frame_embeddings(official, inputs["pixel_values"], head_dim=WIDTH)
        video = official_frame_tokens(official, frames, video_mask, head_dim=WIDTH)
        reference = reference_entity_similarity(official, text, text_mask, video, video_mask)[0]
    expected = dict(zip(names, reference.tolist(), strict=True))
    top_k = int(option(search, "--top-k"))
    ordered = sorted(expected.values(), reverse=True)
    assert min(a - b for a, b in zip(ordered, ordered[1:])) > 1e-3, "the draw must rank the videos without near ties"

    assert [rank for rank, _, _ in hits] == list(range(1, top_k + 1))
    assert [path for _, path, _ in hits] == sorted(expected, key=expected.get, reverse=True)[:top_k]
    for _, path, score in hits:
        assert score == pytest.approx(expected[path], abs=1e-4)
