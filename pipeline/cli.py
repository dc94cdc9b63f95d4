"""The `minnow` command: thin argument parsing that calls into the packages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import MinnowError
from pipeline.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    from pipeline.settings import load_settings

    settings = load_settings()
    overrides: dict[str, object] = {}
    engine: dict[str, object] = {}
    if getattr(args, "labels", None):
        overrides["labels_file"] = Path(args.labels)
    if getattr(args, "heads", None):
        overrides["head_file"] = Path(args.heads)
    if getattr(args, "precision", None):
        engine["precision"] = args.precision
    if getattr(args, "batch_size", None):
        engine["max_batch_size"] = args.batch_size
    if engine:
        overrides["engine"] = settings.engine.model_copy(update=engine)
    return settings.model_copy(update=overrides) if overrides else settings


def cmd_models_build(args: argparse.Namespace) -> int:
    from pipeline.engine.artifacts import artifact_dir, build
    from pipeline.settings import load_settings

    cache = load_settings().engine.cache_dir
    manifest = build(cache, force=args.force, verify_checksums=args.verify)
    folder = artifact_dir(cache)
    print(f"model {manifest['name']} {manifest['version']} in {folder}")
    for name, art in manifest["artifacts"].items():
        print(f"  {name:9} {art['file']:22} {art['bytes'] / 1e6:7.1f} MB  sha256 {art['sha256'][:16]}…")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from pipeline.commands import embed

    return embed.run(_settings(args), args.input, sys.stdout.buffer, batch_size=args.batch_size or 64)


def cmd_infer(args: argparse.Namespace) -> int:
    from pipeline.commands import infer

    return infer.run(_settings(args), args.input, sys.stdout.buffer, batch_size=args.batch_size or 32)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.commands import train

    return train.run(_settings(args), Path(args.data), Path(args.out))


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.commands import evaluate

    return evaluate.run(
        _settings(args), Path(args.data), as_json=args.json, plot=Path(args.plot) if args.plot else None
    )


def cmd_bench_model(args: argparse.Namespace) -> int:
    from pipeline.commands import bench

    return bench.run(_settings(args), as_json=args.json, seconds=args.seconds, batch_sizes=args.batch_sizes)


def cmd_dev_kafka(args: argparse.Namespace) -> int:
    from pipeline import devkafka

    return devkafka.main([args.action, *args.rest])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minnow",
        description="Classify, moderate and summarize events with a quantized mini model; escalate the unsure ones.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="build or inspect the ONNX model artifacts")
    msub = models.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="build fp32 and int8 ONNX artifacts into the cache (idempotent)")
    b.add_argument("--force", action="store_true", help="rebuild even when a valid manifest exists")
    b.add_argument("--verify", action="store_true", help="re-hash the artifacts against the manifest")
    b.set_defaults(func=cmd_models_build)

    def engine_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--precision", choices=["int8", "fp32"], help="model precision (default int8)")
        p.add_argument("--batch-size", type=int, help="events per engine batch")

    e = sub.add_parser("embed", help='{"id","text"} JSON lines in, {"id","embedding"} out')
    e.add_argument("input", nargs="?", help="input file (default stdin)")
    engine_opts(e)
    e.set_defaults(func=cmd_embed)

    i = sub.add_parser("infer", help="events as JSON lines in, one result (or error record) per line out")
    i.add_argument("input", nargs="?", help="input file (default stdin)")
    i.add_argument("--labels", help="YAML label sets (default: the bundled ones)")
    i.add_argument("--heads", help="trained heads from `minnow train`")
    engine_opts(i)
    i.set_defaults(func=cmd_infer)

    t = sub.add_parser("train", help="fit classification heads and calibration on labeled JSON lines")
    t.add_argument("--data", required=True, help='labeled JSON lines: {"family","text","label"}')
    t.add_argument("--out", default="heads.json", help="where to write the heads (default heads.json)")
    t.add_argument("--labels", help="YAML label sets (default: the bundled ones)")
    engine_opts(t)
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="accuracy, macro-F1, calibration and selective accuracy on labeled data")
    ev.add_argument("--data", required=True, help="labeled JSON lines (see docs/evaluation.md)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--plot", help="write the selective-accuracy plot here (PNG); default next to --data")
    ev.add_argument("--labels", help="YAML label sets")
    ev.add_argument("--heads", help="trained heads to evaluate instead of zero-shot")
    engine_opts(ev)
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bm = bsub.add_parser("model", help="engine vs bare encoder throughput, and peak RSS")
    bm.add_argument("--json", action="store_true")
    bm.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    bm.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    bm.add_argument("--precision", choices=["int8", "fp32"])
    bm.set_defaults(func=cmd_bench_model)
    dev = sub.add_parser("dev", help="development helpers")
    dsub = dev.add_subparsers(dest="dev_command", required=True)
    k = dsub.add_parser("kafka", help="a local single-node Apache Kafka from Maven Central (docs/local-kafka.md)")
    k.add_argument("action", choices=["resolve", "start", "stop", "status"])
    k.add_argument("rest", nargs=argparse.REMAINDER, help="--cache-dir DIR, --port N")
    k.set_defaults(func=cmd_dev_kafka)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        code: int = args.func(args)
    except MinnowError as exc:
        print(f"minnow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
