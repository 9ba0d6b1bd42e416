"""Convert a checkpoint of the official HBI code (github.com/jpthu17/HBI) into a folder `from_pretrained` loads.

Retrieval checkpoint (`pytorch_model.bin.<epoch>`, `best.pth`, the released MSR-VTT file) -> HBIForRetrieval and
its processor (the CLIP tokenizer, built offline, and the video processor), ready for `hbi-hf index`:

    python scripts/convert_official_checkpoint.py --checkpoint hbi_msrvtt.pth --output_dir hbi-msrvtt \
        --num_frames 12 --max_words 24

Estimator checkpoint (`banzhaf_estimator.py` epoch file) -> HBIBanzhafEstimator:

    python scripts/convert_official_checkpoint.py --kind estimator --checkpoint pytorch_model.bin.5 \
        --output_dir hbi-estimator

The official checkpoints store no configuration: give the frames, words and cluster rates of the official run.
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf.conversion import (
    OFFICIAL_HEAD_DIM,
    OFFICIAL_MERGE_HEADS,
    convert_official_checkpoint,
    convert_official_estimator_checkpoint,
)
from hbi_hf.output_folder import claim_output_dir


@dataclass
class ConversionArguments:
    checkpoint: str = field(metadata={"help": "Official checkpoint file (read with torch.load(weights_only=True))."})
    output_dir: str = field(
        metadata={"help": "Folder to write: config, safetensors weights and, for retrieval, the processor."}
    )
    kind: str = field(
        default="retrieval", metadata={"help": "'retrieval' or 'estimator'.", "choices": ["retrieval", "estimator"]}
    )
    num_frames: int = field(
        default=12, metadata={"help": "--max_frames of the official run (MSR-VTT 12, ActivityNet 64, DiDeMo 32)."}
    )
    max_words: int = field(
        default=32, metadata={"help": "--max_words of the official run (MSR-VTT 32 or 24, ActivityNet/DiDeMo 64)."}
    )
    cluster_mode: str = field(
        default="ratio", metadata={"help": "'ratio' (official code) or 'count'.", "choices": ["ratio", "count"]}
    )
    video_cluster_ratios: list[float] = field(
        default_factory=lambda: [0.25, 0.5], metadata={"help": "--v_rate0 --v_rate1."}
    )
    text_cluster_ratios: list[float] = field(
        default_factory=lambda: [0.25, 0.5], metadata={"help": "--t_rate0 --t_rate1."}
    )
    head_dim: int = field(
        default=OFFICIAL_HEAD_DIM, metadata={"help": "Attention head width of CLIP and the temporal transformer."}
    )
    merge_num_attention_heads: int = field(
        default=OFFICIAL_MERGE_HEADS, metadata={"help": "Heads of the merge refinement."}
    )


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser(ConversionArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        claim_output_dir(args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    if args.kind == "estimator":
        model = convert_official_estimator_checkpoint(args.checkpoint, args.output_dir)
    else:
        model = convert_official_checkpoint(
            args.checkpoint,
            args.output_dir,
            num_frames=args.num_frames,
            max_words=args.max_words,
            cluster_mode=args.cluster_mode,
            video_cluster_ratios=tuple(args.video_cluster_ratios),
            text_cluster_ratios=tuple(args.text_cluster_ratios),
            head_dim=args.head_dim,
            merge_num_attention_heads=args.merge_num_attention_heads,
        )
    parameters = sum(p.numel() for p in model.parameters())
    print(f"wrote {type(model).__name__} ({parameters:,} parameters) to {args.output_dir}")
    if args.kind == "retrieval":
        print(f"index your videos with: hbi-hf index VIDEO_FOLDER --model {args.output_dir} --out INDEX_FOLDER")


if __name__ == "__main__":
    main()
