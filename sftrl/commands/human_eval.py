"""`sftrl human-eval`: arguments -> export blind A/B pairs of two models, rate them, score them
(the logic is in `sftrl.reports.human_eval`)."""

from __future__ import annotations

from pathlib import Path

from shared.errors import SftrlError


def add_arguments(p, parser_class) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    q = actions.add_parser("export", help="blind, randomly ordered A/B pairs of two models' completions")
    q.add_argument("--model", action="append", required=True, metavar="DIR", help="two model folders")
    q.add_argument("--prompts", required=True, help="JSONL of 'prompt' records")
    q.add_argument("--out", required=True, help="folder for pairs.jsonl, sheet.html, unblinding-key.json")
    q.add_argument("--max-new-tokens", type=int, default=16)
    q.add_argument("--seed", type=int, default=0, help="seed of the A/B order")
    q = actions.add_parser("rate", help="rate pairs in the terminal (stop with q, resume any time)")
    q.add_argument("dir", help="the export folder")
    q.add_argument("--rater", required=True, help="your name (ratings are kept per rater)")
    q = actions.add_parser("score", help="win/tie/loss with 95%% Wilson intervals and rater agreement")
    q.add_argument("dir", help="the export folder")


def export(args) -> None:
    """Greedy completions of the prompts by both models (PyTorch), shuffled into blind A/B pairs."""
    from sftrl.reports import human_eval
    from shared.data import check_prompts_fit, load_jsonl
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.generate import greedy_completions

    if len(args.model) != 2:
        raise SftrlError(f"--model: give exactly two model folders (got {len(args.model)})")
    records = load_jsonl(args.prompts, "prompt")
    prompts = [r["prompt"] for r in records]
    completions = []
    for folder in args.model:
        model = load_pretrained(folder)
        tokenizer = Tokenizer.load(Path(folder) / "tokenizer.json")
        check_prompts_fit(args.prompts, records, tokenizer, args.max_new_tokens,
                          model.config.max_position_embeddings, "--prompts", f"the context of --model {folder}")
        completions.append(greedy_completions(model, tokenizer, prompts, args.max_new_tokens)[0])
    pairs, key = human_eval.make_pairs(prompts, completions[0], completions[1], args.model, seed=args.seed)
    human_eval.export(pairs, key, args.out)
    print(f"wrote {args.out}/pairs.jsonl and {args.out}/sheet.html ({len(pairs)} blind pairs); the key is in "
          f"{args.out}/unblinding-key.json -- keep it from the raters")


def run(args) -> int:
    from sftrl.reports import human_eval

    if args.action == "export":
        export(args)
    elif args.action == "rate":
        human_eval.rate(args.dir, args.rater)
    else:
        print(human_eval.format_score(human_eval.score(args.dir)))
    return 0
