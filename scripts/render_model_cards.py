"""Render the model cards of the planned releases into model_cards/<release>/README.md.

Without an `--eval_results_dir`, every card's results section says "not yet measured". With one, a release whose
`<eval_results_dir>/<release>/eval_results.json` exists gets those measured numbers.

    python scripts/render_model_cards.py [--output_dir model_cards] [--eval_results_dir outputs]
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hbi_hf import HBIBanzhafEstimatorConfig, HBIConfig
from hbi_hf.model_card import EVAL_RESULTS_NAME, HBIEvalResults, load_eval_results, render_model_card

CLIP = "openai/clip-vit-base-patch32"
PLANNED_RELEASES = {
    "msrvtt": ("hbi-hf/hbi-msrvtt-retrieval", dict(num_frames=12, max_words=32, clip_name_or_path=CLIP)),
    "activitynet": ("hbi-hf/hbi-activitynet-retrieval", dict(num_frames=64, max_words=64, clip_name_or_path=CLIP)),
    "didemo": ("hbi-hf/hbi-didemo-retrieval", dict(num_frames=32, max_words=64, clip_name_or_path=CLIP)),
    "msrvtt-qa": ("hbi-hf/hbi-msrvtt-qa", dict(num_frames=12, max_words=32, clip_name_or_path=CLIP)),
    "estimator": ("hbi-hf/hbi-banzhaf-estimator", None),
}
"""Release key -> (Hub repository, HBIConfig settings; None for the estimator). Each model is to be built with
`from_clip` from OpenAI's CLIP ViT-B/32, which its card names as `base_model`."""


@dataclass
class RenderArguments:
    output_dir: str = field(default="model_cards", metadata={"help": "Where to write <release>/README.md."})
    eval_results_dir: str | None = field(default=None, metadata={"help": "Folder of <release>/eval_results.json."})


def planned_card(release: str, eval_results: HBIEvalResults | None = None):
    repo_id, settings = PLANNED_RELEASES[release]
    config = HBIBanzhafEstimatorConfig() if settings is None else HBIConfig(**settings)
    return render_model_card(config, release, eval_results, repo_id=repo_id)


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(RenderArguments).parse_args_into_dataclasses(args=argv)
    for release in PLANNED_RELEASES:
        results = None
        if args.eval_results_dir is not None:
            path = Path(args.eval_results_dir) / release / EVAL_RESULTS_NAME
            results = load_eval_results(path) if path.is_file() else None
        target = Path(args.output_dir) / release / "README.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        planned_card(release, results).save(target)
        print(f"{target}: {'measured results' if results else 'not yet measured'}")


if __name__ == "__main__":
    main()
