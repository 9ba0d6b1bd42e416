"""Train a small HBI on the embedded synthetic dataset on the CPU and evaluate it (`make demo`; `--quick` for ~1 min).
Its CLIP towers are random and trained from scratch (`--towers scratch`, the default), or pre-trained once on
captioned single frames of other scenes, cached, and fine-tuned as the paper fine-tunes CLIP (`--towers pretrained`)."""

from transformers import HfArgumentParser

from hbi_hf.demo import HBIRetrievalDemoArguments, run_demo
from hbi_hf.output_folder import claim_output_dir


def main() -> None:
    parser = HfArgumentParser(HBIRetrievalDemoArguments)
    (args,) = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    metrics, chance = run_demo(args)
    print(f"\n{'metric':<12} {'HBI':>8} {'chance':>8}")
    for direction in ("t2v", "v2t"):
        for k in (1, 5, 10):
            name = f"{direction}_R@{k}"
            print(f"{name:<12} {metrics['test_' + name]:>8.1f} {chance[name]:>8.1f}")
        for name in (f"{direction}_MdR", f"{direction}_MnR"):
            print(f"{name:<12} {metrics['test_' + name]:>8.1f}")
    print(f"\nSaved to {args.output_dir}. Load it back with:")
    print("    import hbi_hf; from transformers import AutoModel, AutoProcessor")
    print(f"    model = AutoModel.from_pretrained({args.output_dir!r})")
    print(f"    processor = AutoProcessor.from_pretrained({args.output_dir!r})")


if __name__ == "__main__":
    main()
