"""The ``lmlab`` command: one entry point, one function per subcommand.

    lmlab recipes
    lmlab train RECIPE_OR_YAML [key=value ...] --out RUN_DIR
    lmlab generate RUN_DIR --prompt TEXT [--max-new-tokens N --temperature T --top-k K --top-p P --seed S]
                   [--quantize int8]
    lmlab eval RUN_DIR [--data FILE] [--json]
    lmlab eval TRANSLATION_RUN_DIR [--split test2016 | --src FILE --ref FILE] [--beam 4 --average K] [--json]
    lmlab translate RUN_DIR "text" | --input FILE [--output FILE] [--beam 4 --length-penalty 0.6 --average K]
    lmlab attention RUN_DIR TEXT --out map.png [--layer L --head H]
    lmlab convert SRC DST --to hf|lmlab
    lmlab fill-mask BERT_RUN_OR_HF_DIR "The man went to the [MASK]." [--top-k 5] [--json]
    lmlab embed BERT_RUN_OR_HF_DIR "text" ["more text" ...] [--no-normalize]
    lmlab classify CLASSIFICATION_RUN_DIR "text" [--pair "second text"] [--json]
    lmlab tag TAGGING_RUN_DIR "text" [--json]
    lmlab eval CLASSIFICATION_OR_TAGGING_RUN_DIR [--split dev|test] [--data FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError


def cmd_recipes(args: argparse.Namespace) -> None:
    from lmlab.config import list_recipes

    recipes = list_recipes()
    width = max(len(n) for n in recipes)
    for name, desc in recipes.items():
        print(f"{name:<{width}}  {desc}")


def cmd_train(args: argparse.Namespace) -> None:
    from lmlab.config import load_config
    from lmlab.runs import train_run

    cfg = load_config(args.recipe, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    result = train_run(cfg, out)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    if "val_loss" in result:
        print(f"done: step {result.get('step')}, val_loss {result['val_loss']:.4f}; run directory: {out}")
    else:
        print(f"done: step {result.get('step')}; run directory: {out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device, quantize=args.quantize)
    printed_prompt = False

    def stream(piece: str) -> None:
        nonlocal printed_prompt
        if not printed_prompt:  # only once generation has started: a bad option prints nothing
            sys.stdout.write(args.prompt)
            printed_prompt = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    p.generate(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
        stream=stream,
    )
    if not printed_prompt:
        sys.stdout.write(args.prompt)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _is_translation(p: Any) -> bool:
    return getattr(p.config, "task", "lm") == "translation"


def _say_averaged(p: Any) -> None:
    if p.averaged:
        names = ", ".join(c.name for c in p.averaged)
        print(f"lmlab: averaged the weights of {len(p.averaged)} checkpoints: {names}", file=sys.stderr)


def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file, or of stdin for '-' (a BOM and CR line endings dropped)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmlabError(f"{path} is not UTF-8 text ({e})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _write_lines(path: str | None, lines: list[str]) -> None:
    if path is None:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    out = Path(path)
    if out.is_dir():
        raise LmlabError(f"--output {out} is a directory: give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def cmd_translate(args: argparse.Namespace) -> None:
    from lmlab.pipeline import load

    if args.text is None and args.input is None:
        raise LmlabError("give a TEXT to translate or --input FILE (one sentence a line; - for stdin)")
    if args.text is not None and args.input is not None:
        raise LmlabError("give either a TEXT to translate or --input FILE, not both")
    p = load(args.run_dir, device=args.device, average=args.average)
    if not _is_translation(p):
        raise LmlabError(
            f"{args.run_dir} is a '{p.config.task}' run, not a translation run: use lmlab generate"
        )
    _say_averaged(p)
    lines = [args.text] if args.input is None else _read_lines(args.input)
    hyps = p.translate(lines, beam=args.beam, length_penalty=args.length_penalty, max_len=args.max_len,
                       batch_size=args.batch_size)
    _write_lines(args.output, hyps)
    if args.input is not None:
        empty = sum(not line.strip() for line in lines)
        note = f" ({empty} empty lines left empty)" if empty else ""
        where = args.output or "stdout"
        done = len(lines) - empty
        print(f"lmlab: translated {done} lines of {args.input} to {where}{note}", file=sys.stderr)


def _eval_translation(p: Any, args: argparse.Namespace) -> None:
    if args.data is not None:
        raise LmlabError("--data is for language-model runs; a translation run takes --split or --src/--ref")
    if (args.src is None) != (args.ref is None):
        raise LmlabError("--src and --ref go together: the sources and their reference translations")
    if args.src is not None and args.split is not None:
        raise LmlabError("give either --split or --src/--ref, not both")
    result = p.evaluate(
        args.split, src=args.src, ref=args.ref, beam=4 if args.beam is None else args.beam,
        length_penalty=args.length_penalty, max_len=args.max_len, batch_size=args.batch_size,
    )
    if args.output is not None:
        _write_lines(args.output, result["hypotheses"])
    if args.json:
        print(json.dumps({k: result[k] for k in ("bleu", "chrf", "signature")}))
    else:
        print(f"bleu: {result['bleu']:.2f}")
        print(f"chrf: {result['chrf']:.2f}")
        print(f"signature: {result['signature']}")
        print(f"sentences: {result['sentences']} ({result['split']})")


def cmd_eval(args: argparse.Namespace) -> None:
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device, average=args.average)
    _say_averaged(p)
    if _is_translation(p):
        _eval_translation(p, args)
        return
    if _is_finetuned(p):
        _eval_finetuned(p, args)
        return
    used = [f"--{k.replace('_', '-')}" for k in ("split", "src", "ref", "beam", "max_len", "output")
            if getattr(args, k) is not None]
    if used:
        raise LmlabError(f"{used[0]} is for translation runs; {args.run_dir} is a '{p.config.task}' run")
    result = p.evaluate(args.data)
    if args.json:  # strict JSON: a non-finite number (a diverged model) becomes null
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in result.items()}
        print(json.dumps(clean))
    else:
        for k, v in result.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


def cmd_attention(args: argparse.Namespace) -> None:
    from lmlab.explain import plot_cross_attention, plot_self_attention
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device)
    if _is_translation(p):  # source tokens x generated target tokens
        path = plot_cross_attention(p, args.text, args.out, layer=args.layer, head=args.head, beam=args.beam)
    else:
        path = plot_self_attention(p, args.text, args.out, layer=args.layer, head=args.head)
    print(f"wrote {path}")


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device)
    fills = p.fill_mask(args.text, top_k=args.top_k)
    if args.json:
        print(json.dumps([[{"token": t, "prob": prob} for t, prob in fill] for fill in fills]))
        return
    for n, fill in enumerate(fills, 1):
        print(f"[MASK] {n}/{len(fills)}:")
        for token, prob in fill:
            print(f"  {prob:.4f}  {token}")


def _is_finetuned(p: Any) -> bool:
    return getattr(p.config, "task", "lm") in ("classification", "tagging")


def _print_json(obj: Any) -> None:
    """One line of strict JSON: a non-finite number (a diverged model) becomes null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    print(json.dumps(clean(obj), ensure_ascii=False))


def _eval_finetuned(p: Any, args: argparse.Namespace) -> None:
    used = [f"--{k.replace('_', '-')}" for k in ("src", "ref", "beam", "max_len", "output")
            if getattr(args, k) is not None]
    if used:
        raise LmlabError(f"{used[0]} is for translation runs; {args.run_dir} is a '{p.config.task}' run")
    if args.data is not None and args.split is not None:
        raise LmlabError("give either --split or --data, not both")
    result = p.evaluate(split=args.split, data=args.data)
    if args.json:
        _print_json(result)
        return
    for k, v in result.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


def _load_finetuned(args: argparse.Namespace, task: str, command: str) -> Any:
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device)
    if getattr(p.config, "task", None) != task:
        want = "a classification run (e.g. lmlab train sst2-bert)" if task == "classification" else (
            "a tagging run (e.g. lmlab train wnut17-bert)")
        raise LmlabError(f"{command} needs {want}; {args.run_dir} is a '{p.config.task}' run")
    return p


def cmd_classify(args: argparse.Namespace) -> None:
    p = _load_finetuned(args, "classification", "classify")
    result = p.classify(args.text, pair=args.pair)
    if args.json:
        _print_json(result)
    else:
        print(f"{result['label']}\t{result['prob']:.4f}")


def cmd_tag(args: argparse.Namespace) -> None:
    p = _load_finetuned(args, "tagging", "tag")
    entities = p.tag(args.text)
    if args.json:
        _print_json(entities)
        return
    if not entities:
        print("lmlab: no entities found", file=sys.stderr)
    for e in entities:
        print(f"{e['start']}\t{e['end']}\t{e['type']}\t{e['text']}\t{e['score']:.4f}")


def cmd_embed(args: argparse.Namespace) -> None:
    from lmlab.pipeline import load

    p = load(args.run_dir, device=args.device)
    for row in p.embed(args.texts, normalize=not args.no_normalize).tolist():
        print(json.dumps([round(x, 6) for x in row]))


def cmd_convert(args: argparse.Namespace) -> None:
    from lmlab.interop import convert

    out = convert(args.src, args.dst, to=args.to)
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmlab", description="Train, evaluate and explain language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="list the bundled recipes")
    p.set_defaults(fn=cmd_recipes)

    p = sub.add_parser("train", help="train (or resume) a run from a recipe or YAML file")
    p.add_argument("recipe", help="a bundled recipe name (see `lmlab recipes`) or a .yaml file")
    p.add_argument(
        "overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=200 model.n_layer=4"
    )
    p.add_argument("--out", help="run directory (default runs/RECIPE); resumes if it holds a checkpoint")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="\n", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 weights for faster CPU generation (slightly different logits)")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser(
        "eval", help="validation loss and perplexity of a run; BLEU / chrF of a translation run; accuracy / "
        "F1 / precision / recall of a classification or tagging run"
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--data", default=None, help="a text file or folder of .txt files (default: the validation split); "
        "classification / tagging: a labelled TSV / CoNLL file"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")
    p.add_argument("--average", type=int, default=None, metavar="K",
                   help="use the mean weights of the last K checkpoints (the paper averages 5)")
    p.add_argument("--split", default=None,
                   help="translation: the split to score (test / test2016, valid, train; default test); "
                   "classification / tagging: dev (default), test or train")
    p.add_argument("--src", default=None, help="translation: a file of sources to translate and score")
    p.add_argument("--ref", default=None, help="translation: the reference translations of --src")
    p.add_argument("--beam", type=int, default=None, help="translation: beam size (default 4; 1 is greedy)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="translation: GNMT alpha (default 0.6)")
    p.add_argument("--max-len", type=int, default=None,
                   help="translation: most output tokens (default: source length + 50)")
    p.add_argument("--batch-size", type=int, default=64, help="translation: sentences decoded at once")
    p.add_argument("--output", default=None, help="translation: also write the translations to this file")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("translate", help="translate text with a translation run")
    p.add_argument("run_dir")
    p.add_argument("text", nargs="?", default=None, help="a sentence to translate (or use --input)")
    p.add_argument("--input", default=None, help="a UTF-8 file, one sentence a line (- for stdin)")
    p.add_argument("--output", default=None, help="write the translations here, one a line (default: stdout)")
    p.add_argument("--beam", type=int, default=4, help="beam size (default 4; 1 is greedy search)")
    p.add_argument("--length-penalty", type=float, default=0.6, help="GNMT length penalty (default 0.6)")
    p.add_argument("--max-len", type=int, default=None, help="most output tokens (default: source + 50)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded at once (default 64)")
    p.add_argument("--average", type=int, default=None, metavar="K",
                   help="use the mean weights of the last K checkpoints (the paper averages 5)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_translate)

    p = sub.add_parser(
        "attention", help="draw a self-attention map for a text (a translation run: its cross-attention)"
    )
    p.add_argument("run_dir")
    p.add_argument("text")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--layer", type=int, default=-1, help="layer (default: the last)")
    p.add_argument("--head", type=int, default=None, help="head (default: the mean over heads)")
    p.add_argument("--beam", type=int, default=4, help="translation: beam size of the translation drawn")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_attention)

    p = sub.add_parser("convert", help="convert between lmlab runs and Hugging Face model directories")
    p.add_argument("src", help="an lmlab run or checkpoint directory, or a Hugging Face model directory")
    p.add_argument("dst", help="the directory to write (must not exist, or be empty)")
    p.add_argument(
        "--to", required=True, choices=["hf", "lmlab"], help="hf: a transformers directory; lmlab: a run"
    )
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("fill-mask", help="the likeliest words for each [MASK] (a BERT masked LM)")
    p.add_argument("run_dir", help="a BERT run, or a Hugging Face BertForMaskedLM directory")
    p.add_argument("text", help='text with one or more [MASK], e.g. "The man went to the [MASK]."')
    p.add_argument("--top-k", type=int, default=5, help="how many fillers per [MASK] (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list (per [MASK]: token, prob)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_fill_mask)

    p = sub.add_parser("embed", help="sentence embeddings from a BERT encoder (one JSON list a line)")
    p.add_argument("run_dir", help="a BERT run or Hugging Face directory (e.g. all-MiniLM-L6-v2)")
    p.add_argument("texts", nargs="+", help="the texts to embed")
    p.add_argument("--no-normalize", action="store_true", help="mean-pooled, not L2-normalised")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_embed)

    p = sub.add_parser(
        "classify", help="the label of a text (or a pair) and its probability (a classification run)"
    )
    p.add_argument("run_dir", help="a classification run (e.g. lmlab train sst2-bert)")
    p.add_argument("text", help="the text to classify")
    p.add_argument("--pair", default=None, help="the second text of a sentence pair (RTE, MRPC)")
    p.add_argument("--json", action="store_true", help='print {"label", "prob", "probs"} as JSON')
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_classify)

    p = sub.add_parser("tag", help="the entities of a text with their character spans (a tagging run)")
    p.add_argument("run_dir", help="a tagging run (e.g. lmlab train wnut17-bert)")
    p.add_argument("text", help="the text to tag")
    p.add_argument("--json", action="store_true", help="print a JSON list of {type, text, start, end, score}")
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=cmd_tag)
    return parser


def _show_warning(message: Any, *args: Any, **kwargs: Any) -> None:
    """Warnings as one ``lmlab: warning: ...`` line on stderr (no source location)."""
    print(f"lmlab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status.

    0: success; 2: a usage error or an LmlabError (one ``lmlab: error: ...`` line, no traceback);
    1: an operating-system error (a file that cannot be read or written); 130: interrupted.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after --out
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            args.fn(args)
        except LmlabError as e:
            print(f"lmlab: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\nlmlab: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `lmlab generate ... | head`: stop quietly
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 0
        except OSError as e:  # a path the user gave that cannot be read or written
            print(f"lmlab: error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
