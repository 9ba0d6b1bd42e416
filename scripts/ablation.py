"""The paper's ablation in miniature on the embedded synthetic dataset (`make ablation`; docs/banzhaf.md): full HBI
(official and sharpened objective), alpha = 0, beta = 0, the entity level only (with and without L_I) and a
mean-pooled CLIP4Clip-style baseline, fine-tuned from the same pre-trained CLIP towers (`--towers scratch`: from
random towers), several training seeds each. Prints mean +- std of the retrieval metrics, each variant's per-seed
differences from the baseline with a paired t-test and a Wilcoxon signed-rank test, and where variants win and lose
(captions with and without a temporal twin); writes each run to <output_dir>/runs/ as it ends (a re-run resumes)
and everything to <output_dir>/ablation_results.json."""

from transformers import HfArgumentParser

from hbi_hf.ablation import HBIAblationArguments, format_comparisons, format_items, format_table, run_ablation
from hbi_hf.output_folder import claim_output_dir


def main() -> None:
    parser = HfArgumentParser(HBIAblationArguments)
    (args,) = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    results = run_ablation(args)
    towers = "pre-trained towers" if args.towers == "pretrained" else "towers trained from scratch"
    print(
        f"\n{towers}; {results['train_rows']} training rows, {results['test_rows']} test rows, seeds {args.seeds}, "
        f"{args.num_train_epochs:g} epochs; mean ± sample std over seeds, in %"
    )
    print(format_table(results["summary"]))
    if results["comparisons"]:
        print("\nPaired by seed against the baseline (differences in points; two-sided p):")
        print(format_comparisons(results["comparisons"]))
    print("\nWhere the variants win and lose (t2v, summed over seeds):")
    print(format_items(results["items"]))
    print(f"\nWall time {results['wall_s']:.0f} s. Every run: {args.output_dir}/runs/, all: ablation_results.json")


if __name__ == "__main__":
    main()
