"""HBI behaves as a transformers model: attention implementations, outputs, loading, the processor.

The conventions table (docs/conventions.md) lists what a transformers user expects, with CLIP as the reference; each
row is one test here, run on HBI and, where CLIP has the same behaviour, on a tiny CLIP as well."""

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, TINY_TEXT_CLIP_VOCABULARY, TINY_VISION, tiny_batch, tiny_hbi_config
from safetensors.torch import save_file
from transformers import AutoModel, AutoProcessor, CLIPConfig, CLIPModel

from hbi_hf import HBIForRetrieval, HBIForVideoQA, HBIModel, HBIProcessor, HBIVideoProcessor
from hbi_hf.data import build_clip_tokenizer


def seeded(model_class=HBIForRetrieval, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_hbi_config(**overrides)).eval()


def attention_implementations(model) -> dict[str, str]:
    hbi = model.base_model
    return {
        "model": model.config._attn_implementation,
        "text tower": hbi.clip.text_model.config._attn_implementation,
        "vision tower": hbi.clip.vision_model.config._attn_implementation,
        "temporal transformer": hbi.temporal.config._attn_implementation,
    }


# ----- attention implementations --------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_from_pretrained_attn_implementation_reaches_the_clip_towers_and_the_temporal_transformer(
    tmp_path, implementation
):
    seeded().save_pretrained(tmp_path)
    model = HBIForRetrieval.from_pretrained(tmp_path, attn_implementation=implementation)
    assert set(attention_implementations(model).values()) == {implementation}
    # the nested Banzhaf estimator accepts any request: its single attention always runs eagerly
    assert model.alignment.banzhaf_teacher.config._attn_implementation == "eager"


def test_set_attn_implementation_switches_every_module_and_keeps_the_scores(tmp_path):
    seeded().save_pretrained(tmp_path)
    model = HBIForRetrieval.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    batch = tiny_batch()
    with torch.no_grad():
        reference = model(**batch).logits_per_text
        model.set_attn_implementation("eager")
        assert set(attention_implementations(model).values()) == {"eager"}
        torch.testing.assert_close(model(**batch).logits_per_text, reference, rtol=1e-4, atol=1e-4)
        model.set_attn_implementation("sdpa")
        assert set(attention_implementations(model).values()) == {"sdpa"}


def test_a_dict_gives_each_tower_its_own_implementation():
    model = seeded(HBIModel)
    model.set_attn_implementation({"text_config": "eager", "vision_config": "sdpa"})
    implementations = attention_implementations(model)
    assert implementations["text tower"] == "eager" and implementations["vision tower"] == "sdpa"


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_the_package_fails_with_transformers_message(tmp_path):
    seeded().save_pretrained(tmp_path)
    with pytest.raises(ImportError, match="FlashAttention2"):
        HBIForRetrieval.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_unknown_attention_implementation_is_refused(tmp_path):
    seeded().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="attn_implementation"):
        HBIForRetrieval.from_pretrained(tmp_path, attn_implementation="no_such_attention")


# ----- outputs, against CLIP ------------------------------------------------------------------------------------------
# Each case: a tiny model, its inputs, and the name its outputs give the visual side (CLIP: image, HBI: video).


def clip_case():
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32)).eval()
    batch = tiny_batch()
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    inputs["pixel_values"] = batch["pixel_values"][:, 0]
    return model, inputs, "image"


def hbi_case():
    return seeded(HBIForRetrieval), tiny_batch(), "video"


CASES = {"CLIP": clip_case, "HBI": hbi_case}


@pytest.mark.parametrize("case", CASES)
def test_return_dict_false_returns_the_fields_as_a_tuple(case):
    model, inputs, _ = CASES[case]()
    with torch.no_grad():
        output = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output.to_tuple())
    for value, expected in zip(as_tuple, output.to_tuple()):
        assert type(value) is type(expected)  # nested outputs are tuples in both
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("case", CASES)
def test_output_hidden_states_returns_every_layer_of_both_towers(case):
    model, inputs, _ = CASES[case]()
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True)
        plain = model(**inputs)
    layers = model.config.text_config.num_hidden_layers
    assert len(output.text_model_output.hidden_states) == layers + 1
    assert len(output.vision_model_output.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    assert plain.text_model_output.hidden_states is None
    torch.testing.assert_close(output.logits_per_text, plain.logits_per_text)


@pytest.mark.parametrize("case", CASES)
def test_output_attentions_returns_every_layer_of_both_towers_with_eager_attention(case):
    model, inputs, _ = CASES[case]()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
    heads = model.config.text_config.num_attention_heads
    assert len(output.text_model_output.attentions) == model.config.text_config.num_hidden_layers
    assert output.text_model_output.attentions[0].shape[:2] == (inputs["input_ids"].shape[0], heads)
    assert len(output.vision_model_output.attentions) == model.config.vision_config.num_hidden_layers


@pytest.mark.parametrize("case", CASES)
def test_outputs_carry_normalised_pooled_embeddings_and_transposed_logits(case):
    model, inputs, visual = CASES[case]()
    with torch.no_grad():
        output = model(**inputs)
    text_embeds, visual_embeds = output.text_embeds, output[f"{visual}_embeds"]
    assert text_embeds.shape == (inputs["input_ids"].shape[0], model.config.projection_dim)
    assert visual_embeds.shape == (inputs["pixel_values"].shape[0], model.config.projection_dim)
    torch.testing.assert_close(text_embeds.norm(dim=-1), torch.ones(len(text_embeds)))
    torch.testing.assert_close(visual_embeds.norm(dim=-1), torch.ones(len(visual_embeds)))
    torch.testing.assert_close(output[f"logits_per_{visual}"], output.logits_per_text.t())


@pytest.mark.parametrize("case", CASES)
def test_get_text_features_pooler_output_is_the_projected_embedding_of_the_outputs(case):
    model, inputs, _ = CASES[case]()
    with torch.no_grad():
        pooled = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        output = model(**inputs)
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1), output.text_embeds)


def test_plain_embedding_tensors_are_the_outputs_embeddings():
    model, inputs, _ = hbi_case()
    with torch.no_grad():
        output = model(**inputs)
        text = model.get_text_embeddings(inputs["input_ids"], inputs["attention_mask"])
        video = model.get_video_embeddings(inputs["pixel_values"], inputs["video_mask"], normalize=True)
    assert isinstance(text, torch.Tensor) and text.shape == (4, model.config.projection_dim)
    torch.testing.assert_close(torch.nn.functional.normalize(text, dim=-1), output.text_embeds)
    torch.testing.assert_close(video, output.video_embeds)
    features = model.get_video_features(inputs["pixel_values"], inputs["video_mask"])
    torch.testing.assert_close(
        features.pooler_output, model.get_video_embeddings(inputs["pixel_values"], inputs["video_mask"])
    )


@pytest.mark.parametrize("case", CASES)
def test_return_loss_gives_a_scalar_loss(case):
    model, inputs, _ = CASES[case]()
    output = model(**inputs, return_loss=True)
    assert output.loss.dim() == 0 and torch.isfinite(output.loss)
    assert model(**inputs, return_dict=False, return_loss=True)[0] is not None


# ----- loading --------------------------------------------------------------------------------------------------------


class LoadReport(logging.Handler):
    """Collects what transformers logs while loading."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_auto_model_loads_the_encoder_of_a_retrieval_checkpoint_silently(tmp_path):
    seeded().save_pretrained(tmp_path)
    report = LoadReport()
    root = logging.getLogger("transformers")
    root.addHandler(report)
    try:
        model = AutoModel.from_pretrained(tmp_path)
    finally:
        root.removeHandler(report)
    assert type(model) is HBIModel
    assert not [message for message in report.messages if "alignment." in message or "LOAD REPORT" in message]
    # keys the encoder does need are still reported
    state = {k: v for k, v in seeded(HBIModel).state_dict().items() if not k.startswith("temporal.")}
    (tmp_path / "partial").mkdir()
    save_file(state, tmp_path / "partial" / "model.safetensors")
    seeded(HBIModel).config.save_pretrained(tmp_path / "partial")
    report = LoadReport()
    root.addHandler(report)
    try:
        AutoModel.from_pretrained(tmp_path / "partial")
    finally:
        root.removeHandler(report)
    assert any("temporal." in message for message in report.messages)


AUTO_PROCESSOR_WITHOUT_PACKAGE = """
import sys
from transformers import AutoProcessor
try:
    AutoProcessor.from_pretrained(sys.argv[1])
except ValueError as error:
    print("REFUSED:", error)
else:
    print("LOADED")
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
ids = processor(text=["a cat " * 40], return_tensors="pt")["input_ids"]
print("CLASS:", type(processor).__name__, type(processor.video_processor).__name__, tuple(ids.shape))
print("IMPORTED:", "hbi_hf" in sys.modules)
"""


def test_auto_processor_without_the_package_asks_for_its_code_instead_of_returning_a_tokenizer(tmp_path):
    folder = tmp_path / "model"
    HBIProcessor(HBIVideoProcessor(num_frames=4), build_clip_tokenizer(), max_words=10).save_pretrained(folder)
    assert isinstance(AutoProcessor.from_pretrained(folder), HBIProcessor)  # with the package: no remote code
    result = subprocess.run(
        [sys.executable, "-c", AUTO_PROCESSOR_WITHOUT_PACKAGE, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "REFUSED:" in result.stdout and "trust_remote_code=True" in result.stdout
    assert "CLASS: HBIProcessor HBIVideoProcessor (1, 10)" in result.stdout  # truncated to max_words
    assert "IMPORTED: False" in result.stdout


# ----- the processor --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor_and_video(tmp_path_factory):
    from hbi_hf.data.synthetic import write_video

    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    frames = np.repeat(np.arange(12, dtype=np.uint8)[:, None, None, None] * 20, 32, axis=1)
    write_video(np.repeat(np.repeat(frames, 32, axis=2), 3, axis=3), path, fps=4)
    video_processor = HBIVideoProcessor(
        num_frames=6, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return HBIProcessor(video_processor, build_clip_tokenizer(), max_words=10), str(path)


def test_processor_output_feeds_the_model_directly(processor_and_video):
    """As X-CLIP's processor: `processor(text=..., videos=..., return_tensors="pt")` gives the model's keyword
    arguments, `pixel_values` of shape `(batch, frames, 3, H, W)` (HBI adds `video_mask`)."""
    processor, video = processor_and_video
    inputs = processor(text=["a grey square brightens", "a cat"], videos=[video], return_tensors="pt")
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "video_mask"}
    assert inputs["input_ids"].shape == (2, 10) and inputs["pixel_values"].shape == (1, 6, 3, 32, 32)
    torch.manual_seed(0)
    model = HBIModel(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))).eval()
    with torch.no_grad():
        assert model(**inputs).logits_per_text.shape == (2, 1)


def test_processor_decodes_ids_back_to_text(processor_and_video):
    processor, _ = processor_and_video
    ids = processor(text=["a cat"], return_tensors="pt")["input_ids"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["a cat"]


def test_processor_round_trips_through_auto_processor(processor_and_video, tmp_path):
    processor, video = processor_and_video
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, HBIProcessor) and loaded.max_words == processor.max_words
    for key, value in processor(text=["a cat"], videos=[video], return_tensors="pt").items():
        torch.testing.assert_close(loaded(text=["a cat"], videos=[video], return_tensors="pt")[key], value)


def test_conventions_table_in_the_docs_names_existing_tests():
    """docs/conventions.md lists each behaviour with the test that checks it; every test it names exists."""
    table = (Path(__file__).parents[1] / "docs" / "conventions.md").read_text()
    names = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", table)
    assert len(names) >= 20
    for file, name in names:
        source = (Path(__file__).parents[1] / file).read_text()
        assert f"def {name}(" in source, f"docs/conventions.md names {file}::{name}, which does not exist"


def test_video_qa_returns_a_tuple_with_return_dict_false():
    model = seeded(HBIForVideoQA, num_labels=5)
    batch = tiny_batch()
    with torch.no_grad():
        output = model(**batch)
        as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.logits)
