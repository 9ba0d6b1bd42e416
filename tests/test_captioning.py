"""Specification of HBIForCaptioning: teacher forcing, Eq. 16 loss, generation through GenerationMixin (greedy and
beam search) with a key/value cache under the installed transformers' name (`cache` from 5.24, `past_key_values`
before), the tokenizer's start / end / padding tokens, save/load, caption metrics, the captioning scripts, and training
on the embedded dataset's captions."""

import dataclasses
import json
import logging
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TEXT_CLIP_VOCABULARY, TINY_VISION, tiny_hbi_config
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerateEncoderDecoderOutput
from transformers.utils import logging as transformers_logging

from hbi_hf import AutoModelForVideoCaptioning, HBIForCaptioning, task_training
from hbi_hf.caption_metrics import JavaNotFoundError, caption_metrics, require_java
from hbi_hf.data import HBIVideoCollator, build_clip_tokenizer
from hbi_hf.modeling_hbi import CACHE_NAME, caption_labels, caption_token_ids
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import generate_captions, references_per_video

SCRIPTS = Path(__file__).parent.parent / "scripts"

BOS, EOS = 98, 99  # the tiny text config's start and end ids; with no tokenizer, generation pads with the end id


def seeded_captioner(seed=0, **overrides):
    settings = dict(caption_decoder_num_attention_heads=4, caption_decoder_intermediate_size=64, caption_dropout=0.0)
    settings.update(overrides)
    torch.manual_seed(seed)
    return HBIForCaptioning(tiny_hbi_config(**settings)).eval()


def video_inputs(batch):
    return {"pixel_values": batch["pixel_values"], "video_mask": batch["video_mask"]}


def test_teacher_forcing_predicts_every_next_caption_token(batch):
    model = seeded_captioner()
    output = model(**batch, return_loss=True)
    assert output.logits.shape == (4, 9, 100)
    labels = caption_labels(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(labels[batch["attention_mask"][:, 1:] == 1], batch["input_ids"][:, 1:][labels != -100])
    assert (labels[batch["attention_mask"][:, 1:] == 0] == -100).all()
    expected_task = F.cross_entropy(output.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(output.task_loss, expected_task)
    torch.testing.assert_close(output.loss, output.alignment_loss + 3.3 * expected_task)


def test_memory_concatenates_the_three_levels_single_modal_video_tokens(batch):
    model = seeded_captioner()
    with torch.no_grad():
        memory = model.encode_video(**video_inputs(batch))
    assert memory.last_hidden_state.shape == (4, 6 + 3 + 2, 32)
    assert torch.equal(memory.attention_mask[:, :6], batch["video_mask"].bool())


def test_training_steps_lower_the_loss_on_a_fixed_batch(batch):
    model = seeded_captioner()
    with torch.no_grad():
        before = model(**batch, return_loss=True).loss.item()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch, return_loss=True).loss.item()
    assert after < before


def argmax_decode(model, batch, steps):
    """Greedy decoding written out by hand: re-run the decoder on the whole prefix at every step, no cache."""
    memory = model.encode_video(**video_inputs(batch))
    sequences = torch.full((batch["pixel_values"].shape[0], 1), BOS)
    finished = torch.zeros(sequences.shape[0], dtype=torch.bool)
    for _ in range(steps):
        next_token = model(encoder_outputs=memory, decoder_input_ids=sequences).logits[:, -1].argmax(-1)
        next_token = torch.where(finished, torch.full_like(next_token, EOS), next_token)
        sequences = torch.cat([sequences, next_token[:, None]], dim=1)
        finished |= next_token == EOS
        if finished.all():
            break
    return sequences


def test_greedy_generate_equals_argmax_decoding_by_hand(batch):
    model = seeded_captioner()
    with torch.no_grad():
        generated = model.generate(**video_inputs(batch), max_new_tokens=6)
        by_hand = argmax_decode(model, batch, steps=6)
    assert torch.equal(generated, by_hand)


def test_beam_search_sequences_stop_at_eos_or_at_the_maximum_length(batch):
    model = seeded_captioner()
    with torch.no_grad():
        first_greedy_token = int(model.generate(**video_inputs(batch), max_new_tokens=1)[0, 1])
        sequences = model.generate(
            **video_inputs(batch), num_beams=3, max_new_tokens=5, eos_token_id=first_greedy_token
        )
    assert (sequences[:, 0] == BOS).all() and sequences.shape[1] <= 6
    ended_at_eos = 0
    for sequence in sequences.tolist():
        if first_greedy_token in sequence[1:]:
            end = sequence.index(first_greedy_token, 1)
            assert all(token == EOS for token in sequence[end + 1 :])
            ended_at_eos += 1
        else:
            assert len(sequence) == 6
    assert ended_at_eos > 0


# ----- the key/value cache ---------------------------------------------------------------------------------------


def record_decoder_calls(model):
    """Per decoder call: (tokens it is given, tokens the self-attention cache already holds or None without one)."""
    calls = []

    def hook(module, args, kwargs):
        decoder_input_ids, cache = args[0], args[3] if len(args) > 3 else kwargs.get("cache")
        calls.append((decoder_input_ids.shape[1], None if cache is None else cache.get_seq_length()))

    return calls, model.decoder.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_and_uncached_decoding_give_identical_tokens(batch, num_beams):
    model = seeded_captioner()
    with torch.no_grad():
        cached = model.generate(**video_inputs(batch), num_beams=num_beams, max_new_tokens=9, use_cache=True)
        uncached = model.generate(**video_inputs(batch), num_beams=num_beams, max_new_tokens=9, use_cache=False)
    assert cached.shape[1] > 3 and torch.equal(cached, uncached)


def test_after_the_first_step_the_decoder_reads_only_the_new_token_and_the_cache_holds_the_prefix(batch):
    model = seeded_captioner()
    calls, handle = record_decoder_calls(model)
    try:
        with torch.no_grad():
            output = model.generate(
                **video_inputs(batch), max_new_tokens=6, min_new_tokens=6, return_dict_in_generate=True
            )
            steps_with_cache = list(calls)
            calls.clear()
            model.generate(**video_inputs(batch), max_new_tokens=6, min_new_tokens=6, use_cache=False)
    finally:
        handle.remove()
    assert steps_with_cache == [(1, step) for step in range(6)]  # token `step` is decoded against `step` cached ones
    assert calls == [(step + 1, None) for step in range(6)]  # without a cache the whole prefix is decoded again
    # `generate` hands back the cache it kept under the name the installed transformers uses
    generate_output_fields = {field.name for field in dataclasses.fields(type(output))}
    assert CACHE_NAME in generate_output_fields and isinstance(output[CACHE_NAME], Cache)
    assert output[CACHE_NAME].get_seq_length() == output.sequences.shape[1] - 1


def test_decoding_token_by_token_with_the_cache_gives_the_full_prefix_logits(batch):
    model = seeded_captioner()
    prefix = batch["input_ids"][:, :7]
    with torch.no_grad():
        memory = model.encode_video(**video_inputs(batch))
        full = model(encoder_outputs=memory, decoder_input_ids=prefix).logits
        cache, steps = DynamicCache(), []
        for position in range(prefix.shape[1]):
            step = model(encoder_outputs=memory, decoder_input_ids=prefix[:, position : position + 1], cache=cache)
            steps.append(step.logits)
    assert cache.get_seq_length() == 7
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_the_output_carries_the_cache_under_the_installed_name_and_the_older_keyword_is_accepted(batch):
    model = seeded_captioner()
    # the name `generate` itself uses in the installed transformers (its output's field for the cache)
    assert CACHE_NAME in {field.name for field in dataclasses.fields(GenerateEncoderDecoderOutput)}
    with torch.no_grad():
        memory = model.encode_video(**video_inputs(batch))
        start = torch.full((4, 1), BOS)
        new_name, old_name = DynamicCache(), DynamicCache()
        output = model(encoder_outputs=memory, decoder_input_ids=start, cache=new_name, use_cache=True)
        older = model(encoder_outputs=memory, decoder_input_ids=start, past_key_values=old_name, use_cache=True)
        assert output[CACHE_NAME] is new_name and older[CACHE_NAME] is old_name
        assert new_name.get_seq_length() == old_name.get_seq_length() == 1
        torch.testing.assert_close(output.logits, older.logits, rtol=0, atol=0)
        assert CACHE_NAME not in model(encoder_outputs=memory, decoder_input_ids=start, cache=DynamicCache())
        with pytest.raises(ValueError, match="both cache and past_key_values"):
            model(encoder_outputs=memory, decoder_input_ids=start, cache=DynamicCache(), past_key_values=old_name)


def test_save_and_auto_load_give_identical_logits_and_captions(tmp_path, batch):
    model = seeded_captioner()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForVideoCaptioning.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, HBIForCaptioning)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
        for kwargs in (dict(max_new_tokens=5), dict(max_new_tokens=5, num_beams=2)):
            assert torch.equal(
                reloaded.generate(**video_inputs(batch), **kwargs), model.generate(**video_inputs(batch), **kwargs)
            )


def test_without_a_tokenizer_generation_starts_and_ends_as_the_text_config_and_pads_with_the_end_token():
    generation_config = seeded_captioner().generation_config  # the tiny text config pads with 0: not a CLIP token
    assert (generation_config.decoder_start_token_id, generation_config.eos_token_id) == (BOS, EOS)
    assert generation_config.pad_token_id == EOS and generation_config.max_new_tokens == 9
    assert generation_config.temperature != 0.01  # not the contrastive temperature


def test_building_and_generating_from_a_video_batch_warns_about_nothing(batch):
    transformers_logging.warning_once.cache_clear()  # warnings already shown once elsewhere must show again here
    warnings = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = warnings.append
    transformers_logger = transformers_logging.get_logger("transformers")
    transformers_logger.addHandler(handler)
    try:
        model = seeded_captioner(temperature=0.05)
        model.generate(**video_inputs(batch), num_beams=2, max_new_tokens=3)
    finally:
        transformers_logger.removeHandler(handler)
    assert [record.getMessage() for record in warnings] == []


def test_missing_java_is_reported_before_any_metric_runs(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(JavaNotFoundError, match="Caption metrics need Java"):
        require_java()
    with pytest.raises(JavaNotFoundError):
        caption_metrics({"v": "a cat"}, {"v": ["a cat"]})


def test_caption_metrics_reject_mismatched_video_ids():
    with pytest.raises(ValueError, match="same video ids"):
        caption_metrics({"v1": "a cat"}, {"v2": ["a cat"]})


def test_hbi_trainer_trains_the_caption_decoder_on_the_embedded_captions_with_clip_frozen(
    tmp_path, tiny_synthetic_root
):
    from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning
    from hbi_hf.task_training import train_task_model
    from hbi_hf.training import HBITrainingArguments

    dataset = load_synthetic_captioning(tiny_synthetic_root)
    model = seeded_captioner(text_config=dict(TINY_TEXT_CLIP_VOCABULARY, **OPENAI_HUB_LEGACY_IDS))
    processor = build_retrieval_processor(model.config)
    clip_before = {name: p.detach().clone() for name, p in model.hbi.clip.named_parameters()}
    decoder_before = {name: p.detach().clone() for name, p in model.decoder.named_parameters()}
    args = HBITrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        freeze_clip=True,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
    )
    trainer = train_task_model(model.train(), dataset["train"], HBICaptioningCollator(processor), args)
    assert trainer.state.global_step == 2
    assert all(torch.equal(p, clip_before[name]) for name, p in model.hbi.clip.named_parameters())
    assert any(not torch.equal(p, decoder_before[name]) for name, p in model.decoder.named_parameters())
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all("task_loss" in entry for entry in logged)
    assert generation_tokens(model.generation_config) == CLIP_TOKENIZER_TOKENS  # the processor's, saved with the model

    videos, references = references_per_video(dataset["test"])
    captions = generate_captions(model, videos, processor, batch_size=2, max_new_tokens=4)
    assert set(captions) == set(references) and all(isinstance(text, str) for text in captions.values())


# ----- special tokens: from the tokenizer, not the CLIP text config ---------------------------------------------------

TRANSFORMERS_DEFAULT_IDS = {
    name: getattr(CLIPTextConfig(), name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")
}
"""transformers' default `CLIPTextConfig`: start and end are CLIP's, but it pads with 1, the BPE token `"`."""
OPENAI_HUB_LEGACY_IDS = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)
"""The legacy ids of OpenAI's CLIP configs on the Hub (`!`, `#`, `"` in CLIP's vocabulary), copied by `from_clip`."""
CLIP_TEXT_CONFIG_IDS = {"transformers_default": TRANSFORMERS_DEFAULT_IDS, "openai_hub_legacy": OPENAI_HUB_LEGACY_IDS}
CLIP_TOKENIZER_TOKENS = (49406, 49406, 49407, 49407)  # <|startoftext|> starts, <|endoftext|> ends and pads
CAPTIONS = ["a dog", "a dog runs across the green field"]  # the first ends early in a batch of both
CLIP_DETAILS = dict(  # what from_clip does not take from the CLIP checkpoint: the tiny test architecture
    num_frames=6,
    max_words=10,
    temporal_num_attention_heads=4,
    temporal_intermediate_size=64,
    merge_num_attention_heads=4,
    video_cluster_counts=[3, 2],
    text_cluster_counts=[4, 2],
    estimator_config=dict(hidden_size=8),
    caption_decoder_num_attention_heads=4,
    caption_decoder_intermediate_size=64,
    caption_dropout=0.0,
)


def generation_tokens(generation_config):
    return (
        generation_config.bos_token_id,
        generation_config.decoder_start_token_id,
        generation_config.eos_token_id,
        generation_config.pad_token_id,
    )


def test_the_special_token_cases_are_what_the_issue_describes():
    assert TRANSFORMERS_DEFAULT_IDS == dict(bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    tokenizer = build_clip_tokenizer()
    assert tokenizer.convert_ids_to_tokens([1, 0, 2]) == ['"', "!", "#"]
    assert caption_token_ids(tokenizer) == dict(
        bos_token_id=49406, decoder_start_token_id=49406, eos_token_id=49407, pad_token_id=49407
    )


@pytest.fixture(scope="module")
def memorised_captions(tiny_synthetic_root):
    """Two test videos captioned `CAPTIONS`, and the weights of a tiny captioner over the CLIP vocabulary whose
    decoder learned them (tokenised by the real CLIP tokenizer); the weights do not depend on the special-token ids
    of the text config."""
    from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning

    test = load_synthetic_captioning(tiny_synthetic_root)["test"]
    rows = [
        {"video_id": test[index]["video_id"], "video_path": test[index]["video_path"], "caption": caption}
        for index, caption in enumerate(CAPTIONS)
    ]
    model = seeded_captioner(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))
    batch = HBICaptioningCollator(build_retrieval_processor(model.config), strict=True)(rows)
    with torch.no_grad():
        memory = model.encode_video(**video_inputs(batch))
    labels = caption_labels(batch["input_ids"], batch["attention_mask"])
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        model(encoder_outputs=memory, decoder_input_ids=batch["input_ids"][:, :-1], labels=labels, return_loss=True)[
            "task_loss"
        ].backward()
        optimizer.step()
    return rows, model.state_dict()


def captioner_with_text_ids(weights, text_ids):
    model = seeded_captioner(text_config=dict(TINY_TEXT_CLIP_VOCABULARY, **text_ids))
    model.load_state_dict(weights)
    return model


@pytest.mark.parametrize("text_ids", CLIP_TEXT_CONFIG_IDS.values(), ids=CLIP_TEXT_CONFIG_IDS.keys())
def test_a_caption_ending_early_in_a_batch_decodes_from_start_to_end_token_with_no_trailing_padding(
    memorised_captions, text_ids
):
    rows, weights = memorised_captions
    model = captioner_with_text_ids(weights, text_ids)
    processor = build_retrieval_processor(model.config)
    videos = [{"video_id": row["video_id"], "video_path": row["video_path"]} for row in rows]
    captions = generate_captions(model, videos, processor, batch_size=2)
    assert captions == {row["video_id"]: row["caption"] for row in rows}  # no '"' padding, no '!' start

    model.set_caption_tokens(processor)
    assert generation_tokens(model.generation_config) == CLIP_TOKENIZER_TOKENS
    batch = HBIVideoCollator(processor, strict=True)(videos)
    with torch.no_grad():
        sequences = model.generate(**batch).tolist()
    a_dog = processor.tokenizer("a dog", add_special_tokens=False)["input_ids"]
    assert sequences[0] == [49406, *a_dog, 49407] + [49407] * (len(sequences[1]) - len(a_dog) - 2)
    assert sequences[1][0] == 49406 and sequences[1][-1] == 49407 and 49407 not in sequences[1][1:-1]
    assert processor.tokenizer.batch_decode(sequences, skip_special_tokens=True)[0].strip() == "a dog"


@pytest.mark.parametrize("text_ids", CLIP_TEXT_CONFIG_IDS.values(), ids=CLIP_TEXT_CONFIG_IDS.keys())
def test_from_clip_takes_the_generation_tokens_from_the_checkpoints_tokenizer(tmp_path, text_ids):
    tokenizer = build_clip_tokenizer()
    clip_config = CLIPConfig(
        text_config=dict(TINY_TEXT_CLIP_VOCABULARY, **text_ids), vision_config=TINY_VISION, projection_dim=32
    )
    torch.manual_seed(0)
    CLIPModel(clip_config).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    model = HBIForCaptioning.from_clip(str(tmp_path / "clip"), **CLIP_DETAILS)
    assert generation_tokens(model.generation_config) == CLIP_TOKENIZER_TOKENS
    text_config = model.config.text_config  # aligned with the tokenizer, as transformers' Trainer does
    assert (text_config.bos_token_id, text_config.eos_token_id, text_config.pad_token_id) == (49406, 49407, 49407)
    model.save_pretrained(tmp_path / "captioner")
    reloaded = AutoModelForVideoCaptioning.from_pretrained(tmp_path / "captioner")
    assert generation_tokens(reloaded.generation_config) == CLIP_TOKENIZER_TOKENS

    # a CLIP folder without tokenizer files: AutoTokenizer would invent one of only the special tokens (ids 0 and 2)
    CLIPModel(clip_config).save_pretrained(tmp_path / "weights_only")
    with pytest.raises(ValueError, match=r"has \d+ tokens, the caption decoder predicts text_config.vocab_size=49408"):
        HBIForCaptioning.from_clip(str(tmp_path / "weights_only"), **CLIP_DETAILS)
    model = HBIForCaptioning.from_clip(str(tmp_path / "weights_only"), tokenizer=tokenizer, **CLIP_DETAILS)
    assert generation_tokens(model.generation_config) == CLIP_TOKENIZER_TOKENS


def test_task_training_gives_a_lora_wrapped_captioner_the_processors_tokens(tmp_path, tiny_synthetic_root):
    from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning
    from hbi_hf.peft_utils import apply_lora
    from hbi_hf.task_training import train_task_model
    from hbi_hf.training import HBITrainingArguments

    model = seeded_captioner(text_config=dict(TINY_TEXT_CLIP_VOCABULARY, **OPENAI_HUB_LEGACY_IDS))
    processor = build_retrieval_processor(model.config)
    args = HBITrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, report_to="none"
    )
    train = load_synthetic_captioning(tiny_synthetic_root)["train"].select(range(2))
    train_task_model(apply_lora(model, r=2, alpha=4, dropout=0.0), train, HBICaptioningCollator(processor), args)
    assert generation_tokens(model.generation_config) == CLIP_TOKENIZER_TOKENS


# ----- captioning scripts and metrics ---------------------------------------------------------------------------------


def test_references_are_read_from_caption_captions_and_references_rows_and_pooled_per_video():
    rows = [
        {"video_id": "v1", "video_path": "v1.mp4", "captions": ["a cat sits", "a cat rests"]},
        {"video_id": "v2", "video_path": "v2.mp4", "caption": "a dog runs"},
        {"video_id": "v2", "video_path": "v2.mp4", "caption": "a dog plays"},
        {"video_id": "v3", "video_path": "v3.mp4", "references": ["a bird flies"]},
    ]
    videos, references = references_per_video(rows)
    assert videos == [{"video_id": v, "video_path": f"{v}.mp4"} for v in ("v1", "v2", "v3")]
    assert references == {
        "v1": ["a cat sits", "a cat rests"],
        "v2": ["a dog runs", "a dog plays"],
        "v3": ["a bird flies"],
    }


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"video_id": "v", "video_path": "v.mp4"},
            r"test.jsonl, row 1: no reference caption; expected one of the fields",
        ),
        (
            {"video_id": "v", "video_path": "v.mp4", "captions": "a cat"},
            r"row 1: field 'captions' must be a non-empty list",
        ),
        (
            {"video_id": "v", "video_path": "v.mp4", "captions": []},
            r"row 1: field 'captions' must be a non-empty list",
        ),
        (
            {"video_id": "v", "video_path": "v.mp4", "caption": " "},
            r"row 1: field 'caption' must be a non-empty string",
        ),
        ({"video_id": "v", "caption": "a cat"}, r"row 1: field 'video_path' is missing or empty"),
    ],
)
def test_a_captioning_row_without_usable_references_is_named_with_its_file_row_and_field(row, message):
    good = {"video_id": "u", "video_path": "u.mp4", "captions": ["a dog"]}
    with pytest.raises(ValueError, match=message):
        references_per_video([good, row], source="test.jsonl")


def test_caption_metrics_on_a_single_video_warn_that_cider_needs_several(monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # stop right after the checks, before any Java runs
    with caplog.at_level(logging.WARNING), pytest.raises(JavaNotFoundError):
        caption_metrics({"v": "a cat"}, {"v": ["a cat"]})
    assert any("CIDEr's IDF needs several videos" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(JavaNotFoundError):
        caption_metrics({"v": "a cat", "w": "a dog"}, {"v": ["a cat"], "w": ["a dog"]})
    assert not [record for record in caplog.records if "CIDEr" in record.getMessage()]
    with pytest.raises(ValueError, match="at least one video"):
        caption_metrics({}, {})


def run_script(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer and METEOR need Java")
def test_evaluate_captioning_script_reads_the_rows_its_docstring_documents(
    tmp_path, memorised_captions, monkeypatch, capsys
):
    rows, weights = memorised_captions
    model = captioner_with_text_ids(weights, TRANSFORMERS_DEFAULT_IDS)
    model.save_pretrained(tmp_path / "model")
    build_retrieval_processor(model.config).save_pretrained(tmp_path / "model")
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(
        "\n".join(
            json.dumps(
                {"video_id": row["video_id"], "video_path": row["video_path"], "captions": [row["caption"], other]}
            )
            for row, other in zip(rows, ["a puppy", "a dog runs on the grass"])
        )
    )
    predictions_file = tmp_path / "predictions.json"
    argv = [
        "--model",
        str(tmp_path / "model"),
        "--test_file",
        str(test_file),
        "--predictions_file",
        str(predictions_file),
    ]
    run_script("evaluate_captioning.py", argv, monkeypatch)
    out = capsys.readouterr().out
    metrics = json.loads(out[out.rindex("{") :])
    assert json.loads(predictions_file.read_text()) == {row["video_id"]: row["caption"] for row in rows}
    # each prediction equals one of its video's references: perfect scores, and CIDEr > 0 over the two videos
    assert metrics["num_videos"] == 2 and metrics["cider"] > 0
    assert metrics["bleu_4"] == pytest.approx(1.0) and metrics["rouge_l"] == pytest.approx(1.0)
    assert metrics["meteor"] == pytest.approx(1.0)
    with pytest.raises(FileExistsError, match="predictions.json exists"):
        run_script("evaluate_captioning.py", argv, monkeypatch)


@pytest.mark.parametrize(
    "script, rows, recipe, loss_weights",
    [
        (  # spec §6 / §8: CLIP frozen, lr 5e-4, batch 64, 50 epochs; alpha = beta = 1 (paper, no official code)
            "train_captioning.py",
            [{"caption": "a dog"}],
            dict(learning_rate=5e-4, num_train_epochs=50, per_device_train_batch_size=64, freeze_clip=True),
            (1.0, 1.0),
        ),
        (  # spec §6 / §8: lr 1e-3 for the new modules, 1e-7 (= 1e-3 x 1e-4) for CLIP, batch 32, 5 epochs
            "train_videoqa.py",
            [{"question": "what runs", "answer": "dog"}],
            dict(
                learning_rate=1e-3, coef_lr=1e-4, per_device_train_batch_size=32, num_train_epochs=5, freeze_clip=False
            ),
            (1.0, 2.0),  # the official MSRVTT-QA run: --skl 1 --kl 2
        ),
    ],
)
def test_task_scripts_default_to_the_papers_recipe(tmp_path, monkeypatch, script, rows, recipe, loss_weights):
    tokenizer = build_clip_tokenizer()
    CLIPModel(
        CLIPConfig(text_config=TINY_TEXT_CLIP_VOCABULARY, vision_config=TINY_VISION, projection_dim=32)
    ).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("\n".join(json.dumps({"video_id": "v", "video_path": "v.mp4", **row}) for row in rows))
    seen = {}

    class SavedNothing:
        def save_model(self, output_dir):
            seen["saved"] = output_dir

    def capture(model, train_dataset, collator, training_args):
        seen["args"], seen["config"] = training_args, model.config
        return SavedNothing()

    monkeypatch.setattr(task_training, "train_task_model", capture)
    argv = [
        "--train_file",
        str(train_file),
        "--output_dir",
        str(tmp_path / "run"),
        "--clip_name_or_path",
        str(tmp_path / "clip"),
    ]
    run_script(script, argv, monkeypatch)
    assert {name: getattr(seen["args"], name) for name in recipe} == recipe
    config = seen["config"]
    assert config.objective == "official"
    assert (config.banzhaf_loss_weight, config.distillation_loss_weight) == loss_weights
