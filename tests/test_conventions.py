"""HBI behaves as a transformers model: attention implementations, outputs, loading, the processor.

The conventions table (docs/conventions.md) lists what a transformers user expects, with CLIP as the reference; each
row is one test here, run on HBI and, where CLIP has the same behaviour, on a tiny CLIP as well."""

import importlib.util

import pytest
import torch
from conftest import tiny_batch, tiny_hbi_config

from hbi_hf import HBIForRetrieval, HBIModel


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
