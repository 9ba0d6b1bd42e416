"""Specification of HBIForCaptioning: teacher forcing, Eq. 16 loss, generation through GenerationMixin (greedy and
beam search), save/load, caption metrics, and training on the embedded dataset's captions."""

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config
from transformers.utils import logging as transformers_logging

from hbi_hf import AutoModelForVideoCaptioning, HBIForCaptioning
from hbi_hf.caption_metrics import JavaNotFoundError, caption_metrics, require_java
from hbi_hf.modeling_hbi import caption_labels

BOS, EOS, PAD = 98, 99, 0


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
        next_token = torch.where(finished, torch.full_like(next_token, PAD), next_token)
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
            assert all(token == PAD for token in sequence[end + 1 :])
            ended_at_eos += 1
        else:
            assert len(sequence) == 6
    assert ended_at_eos > 0


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


def test_generation_defaults_come_from_the_clip_tokens_not_the_contrastive_temperature():
    generation_config = seeded_captioner().generation_config
    assert (generation_config.decoder_start_token_id, generation_config.eos_token_id) == (BOS, EOS)
    assert generation_config.pad_token_id == PAD and generation_config.max_new_tokens == 9
    assert generation_config.temperature != 0.01


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


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer and METEOR need Java")
def test_caption_metrics_are_perfect_for_a_prediction_equal_to_the_references():
    references = {
        "v1": ["a man is cooking pasta in a kitchen"],
        "v2": ["a dog runs across the green field"],
        "v3": ["two people play tennis on a court"],
    }
    perfect = caption_metrics({key: captions[0] for key, captions in references.items()}, references)
    assert perfect["bleu_4"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["meteor"] == pytest.approx(1.0) and perfect["cider"] > 0


def test_hbi_trainer_trains_the_caption_decoder_on_the_embedded_captions_with_clip_frozen(
    tmp_path, tiny_synthetic_root
):
    from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning
    from hbi_hf.retrieval_data import build_retrieval_processor
    from hbi_hf.task_training import generate_captions, references_per_video, train_task_model
    from hbi_hf.training import HBITrainingArguments

    dataset = load_synthetic_captioning(tiny_synthetic_root)
    model = seeded_captioner(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))
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

    videos, references = references_per_video(dataset["test"])
    captions = generate_captions(model, videos, processor, batch_size=2, max_new_tokens=4)
    assert set(captions) == set(references) and all(isinstance(text, str) for text in captions.values())
