"""``cadenza train`` and ``cadenza evaluate``: fit a Music Transformer, measure it on a split."""

from __future__ import annotations

import argparse
import os

from .common import add_device_arg, add_seed_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a Music Transformer on a corpus or on token shards",
        description="Train a Music Transformer. The output directory becomes a checkpoint (config.json, "
                    "model.safetensors) with the training state, log.jsonl and loss.png; --resume continues "
                    "it exactly. Checkpoints are written periodically, and on SIGINT or SIGTERM before the "
                    "command exits (status 130 or 143). Under torchrun --nproc_per_node N it trains with "
                    "DistributedDataParallel.",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument("--corpus", help="built-in corpus name, or a directory of MIDI, MusicXML, kern and ABC files "
                                           "(tokenized on the fly; unreadable files are skipped and counted)")
    data.add_argument("--shards", help="token shard directory written by 'cadenza tokenize'")
    p.add_argument("--scheme", help="tokenization scheme for --corpus: event, remi or anticipatory")
    p.add_argument("--out", required=True, help="output directory (the checkpoint)")
    from cadenza.symbolic.train import SIZES

    p.add_argument("--size", choices=SIZES, help="model size preset (default debug; a resume keeps the run's)")
    p.add_argument("--config", dest="size", choices=SIZES, help=argparse.SUPPRESS)  # the old name of --size
    p.add_argument("--steps", type=int, help="optimizer steps (default from --size)")
    p.add_argument("--batch-size", type=int, help="crops per micro-batch per process")
    p.add_argument("--seq-len", type=int, help="crop length L in tokens")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup", type=int, help="linear warmup steps before the cosine decay")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip, 0 for none (default 1.0)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dropout", type=float, help="override the config's dropout")
    p.add_argument("--attention", choices=("relative", "absolute"), default="relative",
                   help="relative (Music Transformer) or absolute (sinusoidal baseline) attention")
    add_device_arg(p)
    add_seed_arg(p)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="what training steps compute in: auto is bf16 autocast on CUDA and on CPUs with AMX "
                        "(1.7-2.6x faster steps there), float32 elsewhere; weights and checkpoints stay float32")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--init", metavar="MODEL",
                   help="start a new run from these weights (a shipped model's name or a checkpoint directory): its "
                        "model and tokenizer, a fresh optimizer, schedule and data stream; --size, --seq-len and "
                        "--batch-size default to its own. "
                        "Fine-tunes a shipped model, or a model pre-trained on another corpus")
    p.add_argument("--eval-every", type=int, help="evaluate on the valid split every N steps (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int,
                   help="write a checkpoint every N steps (default: at evaluations, else every 500)")
    p.add_argument("--checkpoint-minutes", type=float,
                   help="and at least every M minutes of wall time (default 5; 0: by steps only)")
    p.add_argument("--max-minutes", type=float,
                   help="time box: stop after M minutes in all (resumes included), evaluated and checkpointed; "
                        "the learning rate decays by time too")
    p.add_argument("--log-every", type=int, help="write a log record every N steps")
    p.add_argument("--limit-pieces", type=int,
                   help="use only the first N pieces of each split (a built-in corpus is exported in full first)")
    p.add_argument("--no-augment", action="store_true", help="no transposition or time stretch")
    p.add_argument("--transpose", choices=("keys", "paper"), default="keys",
                   help="transpositions: every key within the piano range (default) or the paper's -3..+3")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser("evaluate", help="NLL per token, bits per note and bits per second of a checkpoint")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory (a 'cadenza train --out' directory)")
    e.add_argument("--split", choices=("train", "valid", "test"), default="valid")
    data = e.add_mutually_exclusive_group()
    data.add_argument("--corpus", help="evaluate on this corpus instead of the training one")
    data.add_argument("--shards", help="evaluate on these token shards instead of the training ones")
    e.add_argument("--seq-len", type=int, help="context length (default: the training crop length)")
    e.add_argument("--batch-size", type=int)
    e.add_argument("--limit-pieces", type=int, help="only the first N pieces of the split")
    add_device_arg(e)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_evaluate)


def run_train(args) -> int:
    import sys

    from cadenza.symbolic.train import TrainingInterrupted, TrainSettings, train

    if not args.resume and not (args.corpus or args.shards):
        from cadenza.data.errors import CadenzaError

        raise CadenzaError("give --corpus NAME_OR_DIR or --shards DIR (or --resume)")
    settings = TrainSettings(
        out=args.out, corpus=args.corpus, shards=args.shards, scheme=args.scheme, size=args.size,
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, warmup=args.warmup,
        grad_accum=args.grad_accum, clip=args.clip, weight_decay=args.weight_decay, dropout=args.dropout,
        attention=args.attention, device=args.device, precision=args.precision, seed=args.seed, resume=args.resume,
        init=args.init,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes, max_minutes=args.max_minutes, log_every=args.log_every,
        limit_pieces=args.limit_pieces, augment=not args.no_augment, transpose=args.transpose,
        num_workers=args.workers,
        progress=not args.quiet, stop_after=args.stop_after,
    )
    try:
        summary = train(settings)
    except TrainingInterrupted as stopped:
        if os.environ.get("RANK", "0") == "0":
            print(f"cadenza: {stopped}", file=sys.stderr)
        return stopped.exit_status
    if summary["rank"] == 0:
        skipped = summary["skipped"]
        if skipped:
            names = ", ".join(piece for _, piece, _ in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            print(f"skipped {len(skipped)} unreadable pieces: {names} (first: {skipped[0][2]})")
        metrics = summary["metrics"]
        figures = (f"; valid {metrics['nll_per_token']:.3f} nats/token, {metrics['bits_per_note']:.2f} bits/note, "
                   f"{metrics['bits_per_second']:.1f} bits/s" if metrics else "")
        print(f"trained to step {summary['step']} in {summary['seconds']:.1f} s "
              f"({summary['tokens_per_s']:.0f} tokens/s){figures}; checkpoint in {summary['out']}")
    return 0


def run_evaluate(args) -> int:
    from cadenza.symbolic.evaluate import evaluate_checkpoint

    from .common import print_json

    result = evaluate_checkpoint(args.checkpoint, split=args.split, corpus=args.corpus, shards=args.shards,
                                 seq_len=args.seq_len, batch_size=args.batch_size, limit_pieces=args.limit_pieces,
                                 device=args.device, progress=not args.quiet)
    if args.json:
        print_json(result)
    else:
        print(f"{args.checkpoint} (step {result['step']}) on {result['split']}: {result['pieces']} pieces, "
              f"{result['tokens']} tokens, {result['notes']} notes, {result['seconds']:.1f} s")
        print(f"  NLL per token    {result['nll_per_token']:.4f} nats")
        print(f"  bits per note    {result['bits_per_note']:.3f}")
        print(f"  bits per second  {result['bits_per_second']:.2f}")
    return 0
