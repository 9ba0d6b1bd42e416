"""The paper's ablation in miniature on the embedded synthetic dataset (`make ablation`; docs/banzhaf.md): full HBI,
alpha = 0, beta = 0, the entity level only and a mean-pooled CLIP4Clip-style baseline, several training seeds each;
prints mean +- std of t2v R@1, t2v R@5 and Rsum and writes every run to <output_dir>/ablation_results.json."""

from transformers import HfArgumentParser

from hbi_hf.ablation import HBIAblationArguments, format_table, run_ablation
from hbi_hf.output_folder import claim_output_dir


def main() -> None:
    parser = HfArgumentParser(HBIAblationArguments)
    (args,) = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    results = run_ablation(args)
    print(
        f"\n{results['train_rows']} training rows, {results['test_rows']} test rows, seeds {args.seeds}, "
        f"{args.num_train_epochs:g} epochs; mean ± sample std over seeds, in %"
    )
    print(format_table(results["summary"]))
    print(f"\nWall time {results['wall_s']:.0f} s. Every run: {args.output_dir}/ablation_results.json")


if __name__ == "__main__":
    main()
