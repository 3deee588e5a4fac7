"""Beam search against greedy decoding on a trained translation run: time, sentences/s and BLEU.

Issue 3's target: batched beam search of size 4 costs <= 2.5x the time of greedy decoding over the
same test set. Both are timed in the same process, on the same sentences, with what ``lmlab eval``
and ``lmlab translate`` use (``TranslationPipeline.translate``: length-sorted batches of 64 sentences,
source -> detokenised text; beam 4 with length penalty 0.6, beam 1 = greedy search). Loading the run
and scoring are not timed. Greedy and beam runs alternate (``--repeats`` of each, after one untimed
warm-up batch); the table gives the median wall time and the ratio of the medians; the JSON also has
every repeat's wall and process CPU time (CPU time is less disturbed by other processes).

    .venv/bin/python benchmarks/beam_vs_greedy.py                     # runs/m30k-en-de, test2016
    .venv/bin/python benchmarks/beam_vs_greedy.py --n 100 --repeats 1 # smoke run: 100 sentences
    .venv/bin/python benchmarks/beam_vs_greedy.py RUN_DIR --split valid --average 5

Writes benchmarks/results/beam_vs_greedy.json (beam_vs_greedy_quick.json with --n). On a machine
shared with other work, pass ``--threads 1``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from common import describe_machine, fmt_num, machine_info, markdown_table, median, set_threads, write_results

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT / "runs" / "m30k-en-de"
TARGET_RATIO = 2.5


def timed(fn: Any) -> tuple[Any, float, float]:
    """(fn(), wall seconds, process CPU seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    import lmlab
    from lmlab.data.parallel import load_split
    from lmlab.metrics import bleu

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "run_dir", nargs="?", default=str(DEFAULT_RUN), help="a translation run (default %(default)s)"
    )
    ap.add_argument("--split", default=None, help="split to decode (default: the run's test split, test2016)")
    ap.add_argument("--n", type=int, default=0, help="only the first N sentences (0: the whole split)")
    ap.add_argument("--beam", type=int, default=4, help="beam size compared with greedy (default 4)")
    ap.add_argument(
        "--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha (default 0.6)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=64, help="sentences per batch (default 64, as lmlab eval)"
    )
    ap.add_argument(
        "--average", type=int, default=0, help="average the last K checkpoints (default: last one)"
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each decoding, alternating (default 3)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--out", default=None, help="results name (default beam_vs_greedy[_quick])")
    args = ap.parse_args(argv)

    run = Path(args.run_dir)
    if not (run / "config.yaml").is_file():
        print(
            f"error: {run} is not a run directory; train one first, e.g.\n"
            "  .venv/bin/lmlab train multi30k-en-de --out runs/m30k-en-de",
            file=sys.stderr,
        )
        return 2
    set_threads(args.threads)
    info = machine_info()
    p = lmlab.load(run, average=args.average or None)
    if not hasattr(p, "translate"):
        print(f"error: {run} is not a translation run", file=sys.stderr)
        return 2
    split = args.split or p.default_split()
    text = load_split(p.config.data, split)
    src, ref = list(text.src), list(text.tgt)
    if args.n > 0:
        src, ref = src[: args.n], ref[: args.n]
    quick = 0 < args.n < len(text.src)

    print(f"# Beam {args.beam} vs greedy decoding{' (QUICK: a subset)' if quick else ''}\n")
    print(f"machine: {describe_machine(info)}")
    averaged = f", average of {args.average}" if args.average else ""
    print(
        f"run: {run} ({p.config.family}, {p.model.num_params() / 1e6:.1f}M parameters, checkpoint "
        f"{p.checkpoint.name if p.checkpoint else '?'}{averaged}); "
        f"split {split}: {len(src)} sentences; batches of {args.batch_size}; "
        f"length penalty {args.length_penalty}; {args.repeats} timed run(s) of each"
    )
    sys.stdout.flush()

    decodings = {"greedy": 1, f"beam {args.beam}": args.beam}
    p.translate(src[: args.batch_size], beam=1, batch_size=args.batch_size)  # warm-up (untimed)
    walls: dict[str, list[float]] = {k: [] for k in decodings}
    cpus: dict[str, list[float]] = {k: [] for k in decodings}
    hyps: dict[str, list[str]] = {}
    for _ in range(max(1, args.repeats)):
        for name, beam in decodings.items():
            out, wall, cpu = timed(
                lambda beam=beam: p.translate(
                    src, beam=beam, length_penalty=args.length_penalty, batch_size=args.batch_size
                )
            )
            if name in hyps and out != hyps[name]:
                raise RuntimeError(f"{name}: two runs gave different translations")
            hyps[name] = out
            walls[name].append(wall)
            cpus[name].append(cpu)

    records = []
    greedy_wall, greedy_cpu = median(walls["greedy"]), median(cpus["greedy"])
    table = []
    for name, beam in decodings.items():
        wall, cpu = median(walls[name]), median(cpus[name])
        scores = bleu(hyps[name], ref, tokenize=p.bleu_tokenize)
        ratio = wall / greedy_wall
        rec = {
            "decoding": name,
            "beam": beam,
            "sentences": len(src),
            "wall_s": wall,
            "cpu_s": cpu,
            "sentences_per_s": len(src) / wall,
            "bleu": scores["bleu"],
            "chrf": scores["chrf"],
            "time_vs_greedy": ratio,
            "cpu_time_vs_greedy": cpu / greedy_cpu,
            "wall_s_all": walls[name],
            "cpu_s_all": cpus[name],
        }
        records.append(rec)
        table.append(
            [
                name,
                len(src),
                f"{wall:.2f}",
                fmt_num(len(src) / wall),
                f"{scores['bleu']:.2f}",
                f"{scores['chrf']:.2f}",
                f"{ratio:.2f}x",
                f"{cpu / greedy_cpu:.2f}x",
            ]
        )
    print()
    print(
        markdown_table(
            [
                "decoding",
                "sentences",
                "time (s)",
                "sentences/s",
                "BLEU",
                "chrF",
                "time vs greedy",
                "CPU time vs greedy",
            ],
            table,
        )
    )
    print()
    print(f"sacreBLEU signature: {bleu(hyps['greedy'], ref, tokenize=p.bleu_tokenize)['signature']}")
    ratio = records[1]["time_vs_greedy"]
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"target (issue 3): beam {args.beam} <= {TARGET_RATIO}x greedy time: {ratio:.2f}x, {verdict}")
    if quick:
        print("(QUICK run on a subset: the whole split is the figure to report)")

    path = write_results(
        args.out or ("beam_vs_greedy_quick" if quick else "beam_vs_greedy"),
        {
            "benchmark": "beam_vs_greedy",
            "quick": quick,
            "machine": info,
            "run": str(run),
            "checkpoint": str(p.checkpoint) if p.checkpoint else None,
            "average": args.average,
            "split": split,
            "sentences": len(src),
            "batch_size": args.batch_size,
            "length_penalty": args.length_penalty,
            "repeats": args.repeats,
            "results": records,
            "target_ratio": TARGET_RATIO,
            "ratio": ratio,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
