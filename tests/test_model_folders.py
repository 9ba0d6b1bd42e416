"""Every model folder the package writes is complete: it carries the processor that reads the model's inputs, and
the code that loads it without `import hbi_hf` (`trust_remote_code=True`)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, TINY_VISION, tiny_hbi_config
from transformers import AutoProcessor, CLIPConfig, CLIPModel

from hbi_hf import HBIForCaptioning, HBIForRetrieval, HBIForVideoQA, HBIProcessor, HBIVideoProcessor
from hbi_hf.data import build_clip_tokenizer
from hbi_hf.modeling_hbi import default_processor
from hbi_hf.training import HBITrainer, HBITrainingArguments

REPO_ROOT = Path(__file__).resolve().parents[1]


def clip_vocabulary_config(**overrides):
    """The tiny test configuration over OpenAI's CLIP vocabulary (the vocabulary of every released CLIP)."""
    return tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY), **overrides)


def file_names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def run_fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a new interpreter that never imports `hbi_hf` (it checks so itself)."""
    check = "\nimport sys\nassert 'hbi_hf' not in sys.modules, 'hbi_hf was imported'\n"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + check],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
        timeout=300,
    )


# ----- the processor ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [HBIForRetrieval, HBIForVideoQA, HBIForCaptioning])
def test_save_pretrained_writes_the_processor_that_matches_the_config(model_class, tmp_path):
    config = clip_vocabulary_config(num_frames=5, max_words=12)
    model_class(config).save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)

    assert isinstance(processor, HBIProcessor) and processor.max_words == 12
    batch = processor(text=["a cat"], videos=[torch.randint(0, 256, (9, 40, 50, 3), dtype=torch.uint8).numpy()])
    assert batch["input_ids"].tolist() == [[49406, 320, 2368] + [49407] * 9]
    assert tuple(batch["pixel_values"].shape) == (1, 5, 3, 32, 32)


def test_a_saved_processor_is_kept_and_an_explicit_one_is_saved(tmp_path):
    model = HBIForRetrieval(clip_vocabulary_config())
    tokenizer = build_clip_tokenizer()
    mine = HBIProcessor(HBIVideoProcessor(num_frames=3), tokenizer, max_words=7)
    mine.save_pretrained(tmp_path / "kept")
    model.save_pretrained(tmp_path / "kept")
    model.save_pretrained(tmp_path / "given", processor=mine)

    for folder in ("kept", "given"):
        processor = AutoProcessor.from_pretrained(tmp_path / folder)
        assert processor.max_words == 7 and processor.video_processor.num_frames == 3


def test_a_text_tower_without_the_clip_vocabulary_gets_no_processor_and_a_warning(tmp_path, caplog):
    model = HBIForRetrieval(tiny_hbi_config())  # a 100-token vocabulary
    assert default_processor(model.config) is None
    with caplog.at_level(logging.WARNING, logger="hbi_hf.modeling_hbi"):
        model.save_pretrained(tmp_path)
    assert "processor_config.json" not in file_names(tmp_path)
    assert "no processor saved" in caplog.text and "processor.save_pretrained" in caplog.text


def test_from_clip_then_save_pretrained_is_one_call_for_model_and_processor(tmp_path):
    CLIPModel(
        CLIPConfig(text_config=TINY_TEXT_CLIP_VOCABULARY, vision_config=TINY_VISION, projection_dim=32)
    ).save_pretrained(tmp_path / "clip")
    model = HBIForRetrieval.from_clip(str(tmp_path / "clip"), num_frames=4, max_words=16)
    model.save_pretrained(tmp_path / "hbi")
    processor = AutoProcessor.from_pretrained(tmp_path / "hbi")
    assert processor.max_words == 16 and processor.video_processor.num_frames == 4


@pytest.mark.parametrize("model_class", [HBIForRetrieval, HBIForVideoQA])
def test_the_trainer_save_of_the_training_scripts_leaves_a_folder_with_the_processor(model_class, tmp_path):
    """What every training script ends with: `trainer.save_model(output_dir)`, with the processor it trained with as
    `processing_class` (saved over the default one) or without one."""
    model = model_class(clip_vocabulary_config())
    trained_with = HBIProcessor(HBIVideoProcessor(num_frames=6), build_clip_tokenizer(), max_words=9)
    arguments = HBITrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    HBITrainer(model=model, args=arguments, processing_class=trained_with).save_model(str(tmp_path / "with"))
    HBITrainer(model=model, args=arguments).save_model(str(tmp_path / "without"))

    assert AutoProcessor.from_pretrained(tmp_path / "with").max_words == 9
    assert AutoProcessor.from_pretrained(tmp_path / "without").max_words == 10


# ----- the README's quick start -----------------------------------------------------------------------------------------


def readme_quick_start() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_quick_start_runs_and_writes_a_small_complete_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_quick_start(), "README.md quick start", "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([2, 3])"
    folder = tmp_path / "hbi-tiny"
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= file_names(folder)
    megabytes = round(sum(path.stat().st_size for path in folder.iterdir()) / 1e6)
    assert megabytes < 25  # was 666 MB with the default (ViT-B/32-sized) config
    assert f"The quick start writes a {megabytes} MB folder." in (REPO_ROOT / "README.md").read_text()


# ----- loading without `import hbi_hf` ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    from hbi_hf import HBIBanzhafEstimator, HBIBanzhafEstimatorConfig

    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    HBIForRetrieval(clip_vocabulary_config()).save_pretrained(root / "retrieval")
    HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(hidden_size=8)).save_pretrained(root / "estimator")
    return root


def test_saved_folders_name_their_code_in_auto_map(saved_folders):
    retrieval = json.loads((saved_folders / "retrieval" / "config.json").read_text())
    estimator = json.loads((saved_folders / "estimator" / "config.json").read_text())
    assert retrieval["auto_map"] == {"AutoConfig": "configuration_hbi.HBIConfig", "AutoModel": "modeling_hbi.HBIModel"}
    assert estimator["auto_map"] == {
        "AutoConfig": "configuration_hbi.HBIBanzhafEstimatorConfig",
        "AutoModel": "modeling_hbi.HBIBanzhafEstimator",
    }
    for folder in ("retrieval", "estimator"):
        assert {"modeling_hbi.py", "configuration_hbi.py"} <= file_names(saved_folders / folder)


def test_a_fresh_interpreter_loads_saved_folders_with_trust_remote_code_and_is_told_to_pass_it(saved_folders):
    """Without `import hbi_hf`: `trust_remote_code=True` loads the model (same features), its processor and the
    estimator; without it, transformers says to pass it (it used to suggest upgrading transformers)."""
    from hbi_hf import HBIModel

    model = HBIModel.from_pretrained(saved_folders / "retrieval").eval()
    processor = AutoProcessor.from_pretrained(saved_folders / "retrieval")
    inputs = processor(text=["a cat", "a dog"])
    with torch.no_grad():
        expected = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).level_tokens[0]
    result = run_fresh_python(
        """
        import torch
        from transformers import AutoModel, AutoProcessor
        try:
            AutoModel.from_pretrained("retrieval")
        except ValueError as error:
            print("refused:", error)
        model = AutoModel.from_pretrained("retrieval", trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained("retrieval", trust_remote_code=True)
        estimator = AutoModel.from_pretrained("estimator", trust_remote_code=True)
        inputs = processor(text=["a cat", "a dog"])
        with torch.no_grad():
            features = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).level_tokens[0]
        torch.save(features, "features.pt")
        print("loaded:", type(model).__name__, type(processor).__name__, type(estimator).__name__)
        """,
        saved_folders,
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout  # after transformers' prompt, which reads no answer here
    refused = result.stdout.split("refused:", 1)[1].split("loaded:")[0]
    assert "trust_remote_code=True" in refused
    assert "upgrade" not in refused.lower()
    assert result.stdout.split("loaded:")[1].split() == ["HBIModel", "HBIProcessor", "HBIBanzhafEstimator"]
    torch.testing.assert_close(torch.load(saved_folders / "features.pt", weights_only=True), expected)


# ----- LoRA adapters ----------------------------------------------------------------------------------------------------


def test_lora_adapter_loads_with_peft_model_and_with_auto_peft_model_given_the_import_allowlist(tmp_path):
    """`PeftModel.from_pretrained(base, adapter)` and `AutoPeftModel.from_pretrained(adapter,
    import_allowlist=["hbi_hf"])` (PEFT refuses to import a library outside its allowlist by default) give the same
    model (docs/sharing.md)."""
    from peft import AutoPeftModel, PeftModel

    from hbi_hf.peft_utils import apply_lora

    config = clip_vocabulary_config()
    HBIForRetrieval(config).save_pretrained(tmp_path / "base")
    adapted = apply_lora(HBIForRetrieval.from_pretrained(tmp_path / "base"), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # adapters that change the outputs
    adapted.save_pretrained(tmp_path / "adapter")
    AutoProcessor.from_pretrained(tmp_path / "base").save_pretrained(tmp_path / "adapter")

    with pytest.raises(ValueError, match="import allowlist"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
    auto = AutoPeftModel.from_pretrained(tmp_path / "adapter", import_allowlist=["hbi_hf"]).eval()
    explicit = PeftModel.from_pretrained(HBIForRetrieval.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    base = HBIForRetrieval.from_pretrained(tmp_path / "base").eval()
    inputs = AutoProcessor.from_pretrained(tmp_path / "adapter")(text=["a cat", "a dog"])
    with torch.no_grad():
        features = [
            m.get_text_features(inputs["input_ids"], inputs["attention_mask"]).level_tokens[0]
            for m in (auto, explicit.eval(), adapted.eval(), base)
        ]
    torch.testing.assert_close(features[0], features[2])
    torch.testing.assert_close(features[1], features[2])
    assert not torch.allclose(features[0], features[3])
