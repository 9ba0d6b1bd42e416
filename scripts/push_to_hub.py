"""Upload a trained output folder to the Hugging Face Hub with its model card, in one commit.

The card is rendered from the folder's config.json and, if present, its eval_results.json (what
scripts/train_retrieval.py and scripts/evaluate_retrieval.py --output_dir write); the card describes the dataset the
results were measured on unless --dataset_name says otherwise. Trainer checkpoints, logs and pickled files are left
out; the folder itself is not modified.

    HF_TOKEN=... python scripts/push_to_hub.py --folder outputs/msrvtt --repo_id org/hbi-msrvtt
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf.hub import HBIHubUnreachableError, push_folder_to_hub
from hbi_hf.model_card import RELEASES


@dataclass
class PushArguments:
    folder: str = field(metadata={"help": "Saved checkpoint folder (config.json, model.safetensors, ...)."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. org/hbi-msrvtt (created if missing)."})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"Release described by the card: one of {sorted(RELEASES)}. Default: the dataset the folder's "
            "eval_results.json was measured on."
        },
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    commit_message: str = field(default="Upload HBI checkpoint", metadata={"help": "Commit message."})


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    try:
        commit = push_folder_to_hub(
            args.folder, args.repo_id, args.dataset_name, private=args.private, commit_message=args.commit_message
        )
    except HBIHubUnreachableError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"pushed {args.folder} to {args.repo_id}: {commit.commit_url}")


if __name__ == "__main__":
    main()
