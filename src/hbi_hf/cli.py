"""`hbi-hf`: index a folder of videos with a trained HBI model, search it with text, explain a match.

hbi-hf index VIDEO_DIR --model MODEL --out INDEX
hbi-hf search INDEX "a query" --top-k 10 [--shortlist N] [--json]
hbi-hf explain VIDEO "a caption" --model MODEL --out figure.png [--estimator PATH] [--exact-samples N]
"""

import argparse
import json
import sys
from dataclasses import asdict

from .explain import explain_video, plot_explanation
from .search_index import build_index, search_index

DEFAULT_SHORTLIST = 1000


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hbi-hf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode every video of a folder into a searchable index")
    index.add_argument("video_dir", help="folder of videos (searched recursively)")
    index.add_argument("--model", help="saved HBI model folder with its processor (default: the index's model)")
    index.add_argument("--out", required=True, help="index folder (created, or updated incrementally)")
    index.add_argument("--batch-size", type=int, default=8, help="videos per forward pass")
    index.add_argument("--checkpoint-every", type=int, default=64, help="videos per saved shard")
    index.add_argument("--device", default="cpu", help="torch device of the model, e.g. cuda")
    index.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    search = commands.add_parser("search", help="rank the indexed videos for a text query")
    search.add_argument("index", help="index folder written by `hbi-hf index`")
    search.add_argument("query", help="the text to search for")
    search.add_argument("--top-k", type=int, default=10, help="results to show")
    search.add_argument(
        "--shortlist",
        type=int,
        default=DEFAULT_SHORTLIST,
        help="videos kept by the global-embedding pre-selection before full HBI scoring; 0 scores every video",
    )
    search.add_argument("--model", help="model folder (default: the one stored in the index)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")

    explain = commands.add_parser("explain", help="draw the word x frame Banzhaf interaction of a video and caption")
    explain.add_argument("video", help="video file")
    explain.add_argument("caption", help="caption to explain")
    explain.add_argument("--model", required=True, help="saved HBI model folder with its processor")
    explain.add_argument("--out", required=True, help="figure file (png, pdf, svg)")
    explain.add_argument("--estimator", help="saved HBIBanzhafEstimator (default: the model's Banzhaf teacher)")
    explain.add_argument(
        "--exact-samples", type=int, default=0, help="use the Monte-Carlo estimate with N samples instead"
    )
    explain.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo samples")
    return parser


def _run_index(args: argparse.Namespace) -> int:
    report = build_index(
        args.video_dir,
        args.out,
        args.model,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        show_progress=not args.no_progress,
    )
    print(
        f"{args.out}: {len(report.added)} added, {len(report.updated)} re-encoded, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged, {len(report.failed)} failed"
    )
    for failure in report.failed:
        print(f"  failed: {failure.path}: {failure.reason}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    hits = search_index(
        args.index, args.query, top_k=args.top_k, shortlist=args.shortlist, model_name_or_path=args.model
    )
    if args.json:
        print(json.dumps([asdict(hit) for hit in hits], indent=1))
        return 0
    width = max([len(hit.path) for hit in hits] + [4])
    print(f"{'rank':>4}  {'file':<{width}}  score")
    for hit in hits:
        print(f"{hit.rank:>4}  {hit.path:<{width}}  {hit.score:.4f}")
    return 0


def _run_explain(args: argparse.Namespace) -> int:
    explanation = explain_video(
        args.video, args.caption, args.model, args.estimator, exact_samples=args.exact_samples, seed=args.seed
    )
    print(plot_explanation(explanation, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    runners = {"index": _run_index, "search": _run_search, "explain": _run_explain}
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
