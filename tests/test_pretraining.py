"""CLIP-style pre-training of the miniature towers: captions say what a single frame shows, the pairs never come from
the retrieval splits, and the result is a CLIP folder cached by recipe that `from_clip` loads like a real CLIP."""

import json

import numpy as np
import pytest
import torch
from transformers import CLIPModel

from hbi_hf import HBIForRetrieval
from hbi_hf.data.synthetic import COLOURS, HBISyntheticObjectState, frame_objects, render_frame, sample_scenes
from hbi_hf.pretraining import (
    RECIPE_FILE,
    HBIPretrainingArguments,
    default_pretrained_dir,
    frame_caption,
    pretrained_towers,
    pretraining_pairs,
    read_recipe,
    recipe_hash,
)

TINY = dict(
    hidden_size=32,
    num_layers=1,
    image_size=32,
    max_words=16,
    num_scenes=6,
    frames_per_scene=2,
    num_steps=2,
    batch_size=4,
    num_heldout_pairs=4,
)


def test_a_frame_caption_names_each_visible_objects_size_colour_shape_and_position():
    objects = [
        HBISyntheticObjectState("red", "circle", x=10.0, y=10.0, relative_size=1.0),
        HBISyntheticObjectState("blue", "square", x=60.0, y=32.0, relative_size=1.5),
        HBISyntheticObjectState("yellow", "triangle", x=32.0, y=32.0, relative_size=1.0),
    ]
    caption = frame_caption(objects, np.random.default_rng(0))
    assert sorted(caption.split(" and ")) == [
        "a big blue square on the right",
        "a red circle at the top left",
        "a yellow triangle in the middle",
    ]
    with pytest.raises(ValueError, match="at least one visible object"):
        frame_caption([], np.random.default_rng(0))


def test_frame_objects_follow_the_rendered_frame():
    scene = sample_scenes(0, 1, "pretrain")[0]
    for index in range(0, 32, 3):
        frame = render_frame(scene, index)
        shown = {tuple(pixel) for pixel in frame.reshape(-1, 3)} - {(25, 25, 30)}
        assert shown == {COLOURS[obj.colour] for obj in frame_objects(scene, index)}, index


def test_pretraining_pairs_come_from_outside_the_retrieval_splits_and_show_what_they_say():
    scenes = sample_scenes(0, 3, "pretrain")
    frames, captions = pretraining_pairs(scenes, frames_per_scene=4, seed=0)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8 and len(captions) == 12
    for frame, caption in zip(frames, captions, strict=True):
        colours = {tuple(pixel) for pixel in frame.reshape(-1, 3)} - {(25, 25, 30)}
        assert colours == {COLOURS[name] for name in COLOURS if f" {name} " in f" {caption} "}, caption
    for split in ("train", "test"):
        with pytest.raises(ValueError, match="outside the retrieval splits"):
            pretraining_pairs(sample_scenes(0, 2, split), frames_per_scene=1, seed=0)


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("towers") / "clip"
    return pretrained_towers(HBIPretrainingArguments(**TINY), folder)


def test_pretrained_towers_are_a_clip_folder_that_from_clip_loads_exactly(tiny_towers):
    clip = CLIPModel.from_pretrained(tiny_towers)
    recipe = json.loads((tiny_towers / RECIPE_FILE).read_text())
    assert recipe["recipe"]["arguments"]["num_steps"] == 2 and recipe["figures"]["pairs"] == 12
    model = HBIForRetrieval.from_clip(str(tiny_towers), num_frames=4, max_words=16)
    loaded = model.hbi.clip.state_dict()
    assert all(torch.equal(tensor, loaded[name]) for name, tensor in clip.state_dict().items())


def test_pretrained_towers_are_reused_by_recipe_and_rebuilt_when_it_changes(tiny_towers, monkeypatch):
    import hbi_hf.pretraining as pretraining

    weights = (tiny_towers / "model.safetensors").read_bytes()
    trained = []
    original = pretraining.pretrain_clip
    monkeypatch.setattr(pretraining, "pretrain_clip", lambda args: trained.append(args) or original(args))
    assert pretrained_towers(HBIPretrainingArguments(**TINY), tiny_towers) == tiny_towers
    assert not trained and (tiny_towers / "model.safetensors").read_bytes() == weights
    changed = HBIPretrainingArguments(**{**TINY, "num_steps": 3})
    assert recipe_hash(changed) != recipe_hash(HBIPretrainingArguments(**TINY))
    assert default_pretrained_dir(changed) != default_pretrained_dir(HBIPretrainingArguments(**TINY))
    # the same folder with another recipe: this package made it, so it is rebuilt
    assert pretrained_towers(changed, tiny_towers) == tiny_towers
    assert len(trained) == 1 and read_recipe(tiny_towers)["arguments"]["num_steps"] == 3
    pretrained_towers(HBIPretrainingArguments(**TINY), tiny_towers)  # back to the module's recipe
    assert (tiny_towers / "model.safetensors").read_bytes() == weights  # deterministic


def test_pretraining_never_writes_into_a_folder_it_did_not_make(tmp_path, monkeypatch):
    import hbi_hf.pretraining as pretraining

    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setattr(pretraining, "pretrain_clip", lambda args: pytest.fail("must refuse before training"))
    with pytest.raises(FileExistsError, match="not made by hbi_hf"):
        pretrained_towers(HBIPretrainingArguments(**TINY), tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
