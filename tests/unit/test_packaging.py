"""What an installed package promises: the worker needs no optional extra, the files beside the code are found, the
command line explains itself and fails in one line, unknown MINNOW_* variables are reported (docs/packaging.md)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline import assets
from pipeline.cli import EXTRAS, build_parser, known_failure, main
from pipeline.engine import bundle
from pipeline.environment import OUTSIDE_PREFIXES, known_variables, report_unknown

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRA_MODULES = set(EXTRAS)


def test_worker_and_escalator_load_without_any_extra(model_cache: Path) -> None:
    """Loading the whole engine (every task, moderation included) and importing the worker, escalator, review and
    topic tools imports no module of an optional extra (scikit-learn, scipy, onnx, matplotlib, ...)."""
    code = (
        "import sys, json;"
        "from pathlib import Path;"
        "from pipeline.settings import Settings, EngineSettings;"
        "from pipeline.stages.infer import MiniModel;"
        "import pipeline.stream.app, pipeline.stream.escalator, pipeline.stream.review, pipeline.ops.topics;"
        "import pipeline.cli;"
        f"MiniModel.load(Settings(engine=EngineSettings(cache_dir=Path({str(model_cache)!r}))));"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    assert "onnxruntime" in loaded and "pipeline" in loaded
    assert loaded & EXTRA_MODULES == set()


def test_extras_hold_what_the_runtime_leaves_out() -> None:
    """The runtime dependencies name no extra's package; `dev` installs every extra (make setup runs the tests)."""
    runtime = " ".join(PYPROJECT["project"]["dependencies"])
    for package in (
        "scikit-learn",
        "scipy",
        "onnx>",
        "matplotlib",
        "rouge-score",
        "alt-profanity-check",
        "safetensors",
    ):
        assert package not in runtime
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "minnow-stream[build,train,eval]" in extras["dev"]
    assert PYPROJECT["project"]["name"] == "minnow-stream"
    assert PYPROJECT["project"]["scripts"]["minnow"] == "pipeline.cli:main"


def test_checkout_files_are_found_in_the_checkout() -> None:
    """In a checkout, topics/ and the poms are the top-level ones; no wheel model is carried here."""
    assert assets.in_checkout()
    assert assets.topics_dir() == ROOT / "topics"
    assert assets.kafka_pom() == ROOT / "deploy" / "local" / "pom.xml"
    assert assets.registry_pom().is_file()
    assert assets.packaged("topics") == ROOT / "pipeline" / "_assets" / "topics"


def test_a_carried_model_is_chosen_for_this_cpu_or_refused(tmp_path: Path, model_cache: Path) -> None:
    """bundle.carried() returns the variant whose quantization fits this CPU, and None for another recipe or a
    missing file."""
    from pipeline.engine.artifacts import build
    from pipeline.engine.quantize import choose_mode, cpu_flags

    manifest = build(model_cache)  # the model the session uses; its int8 graph is this CPU's mode
    source = model_cache / "models" / manifest["name"]
    (tmp_path / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (tmp_path / "encoder-int8-here.onnx").write_bytes(b"x" * 10)
    other = choose_mode(() if manifest["quantization"]["weight_type"] == "QInt8" else ("avx512_vnni",)).manifest()
    variants = {
        "other": {"file": "encoder-int8-other.onnx", "bytes": 10, "sha256": "0", "quantization": other},
        "here": {
            "file": "encoder-int8-here.onnx",
            "bytes": 10,
            "sha256": "0",
            "quantization": manifest["quantization"],
        },
    }
    fields = {k: manifest[k] for k in ("name", "version", "recipe", "source", "config", "onnx_opset")}
    tokenizer = {"file": "tokenizer.json", "bytes": 1, "sha256": "0"}
    (tmp_path / "manifest.json").write_text(json.dumps(fields | {"tokenizer": tokenizer, "variants": variants}))
    chosen = bundle.carried(tmp_path)
    assert chosen is not None and chosen.onnx_path.name == "encoder-int8-here.onnx"
    assert chosen.version == manifest["version"] and chosen.precision == "int8"
    assert choose_mode(cpu_flags()).weight_type == chosen.manifest["quantization"]["weight_type"]
    (tmp_path / "manifest.json").write_text(json.dumps(fields | {"recipe": "old", "variants": variants}))
    assert bundle.carried(tmp_path) is None
    assert bundle.carried(tmp_path / "absent") is None


def _one_mode_bundle(folder: Path, model_cache: Path, mode: str) -> None:
    """A bundle folder carrying only `mode`'s graph (a placeholder file: carried() reads the manifest, not it)."""
    from pipeline.engine.artifacts import build
    from pipeline.engine.quantize import choose_mode

    manifest = build(model_cache)
    source = model_cache / "models" / manifest["name"]
    (folder / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    (folder / f"encoder-int8-{mode}.onnx").write_bytes(b"x" * 10)
    quantization = choose_mode(bundle.MODES[mode]).manifest() | {"calibration": manifest["quantization"]["calibration"]}
    variant = {"file": f"encoder-int8-{mode}.onnx", "bytes": 10, "sha256": "0", "quantization": quantization}
    fields = {k: manifest[k] for k in ("name", "version", "recipe", "source", "config", "onnx_opset")}
    tokenizer = {"file": "tokenizer.json", "bytes": 1, "sha256": "0"}
    (folder / "manifest.json").write_text(json.dumps(fields | {"tokenizer": tokenizer, "variants": {mode: variant}}))


def test_a_cpu_with_a_dot_product_runs_a_portable_only_bundle(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default image carries the u8 graph only: a CPU with an int8 dot product runs it (u8 x u8 is exact
    everywhere) instead of trying to build its own graph from weights the image does not have."""
    from pipeline.engine import quantize

    _one_mode_bundle(tmp_path, model_cache, "u8")
    monkeypatch.setattr(quantize, "cpu_flags", lambda: ("avx2", "avx512f", "avx512_vnni"))
    chosen = bundle.carried(tmp_path)
    assert chosen is not None and chosen.onnx_path.name == "encoder-int8-u8.onnx"
    assert chosen.manifest["quantization"]["weight_type"] == "QUInt8"
    monkeypatch.setattr(quantize, "cpu_flags", lambda: ("avx2",))
    chosen = bundle.carried(tmp_path)
    assert chosen is not None and chosen.onnx_path.name == "encoder-int8-u8.onnx"


def test_a_dot_only_bundle_is_refused_on_a_cpu_without_the_dot_product(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The s8 graph computes wrong where u8 x s8 products saturate (AVX2): a dot-only image there stops with one
    line naming the portable image, and runs on a CPU that has the dot product."""
    from pipeline.engine import quantize
    from pipeline.errors import ModelError

    _one_mode_bundle(tmp_path, model_cache, "dot")
    monkeypatch.setattr(quantize, "cpu_flags", lambda: ("avx2", "avx512f"))
    with pytest.raises(ModelError, match=r"graph for dot only .*INT8_MODES=u8") as refused:
        bundle.carried(tmp_path)
    assert "\n" not in str(refused.value)
    monkeypatch.setattr(quantize, "cpu_flags", lambda: ("avx2", "avx_vnni"))
    chosen = bundle.carried(tmp_path)
    assert chosen is not None and chosen.onnx_path.name == "encoder-int8-dot.onnx"


@pytest.mark.parametrize(
    ("text", "modes"), [("u8", ("u8",)), ("dot", ("dot",)), ("dot,u8", ("dot", "u8")), ("all", ("dot", "u8"))]
)
def test_models_bundle_takes_the_modes_to_carry(text: str, modes: tuple[str, ...]) -> None:
    """`minnow models bundle --modes` (the image's INT8_MODES) names the graphs to build; default all."""
    args = build_parser().parse_args(["models", "bundle", "--modes", text])
    assert args.modes == modes
    assert build_parser().parse_args(["models", "bundle"]).modes is None


def test_models_bundle_refuses_an_unknown_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """A mode name that is not a graph is a one-line usage error (exit 2)."""
    with pytest.raises(SystemExit) as done:
        main(["models", "bundle", "--modes", "avx2"])
    assert done.value.code == 2
    assert "expected all or a comma list of dot, u8, got 'avx2'" in capsys.readouterr().err


def _subcommands(parser: argparse.ArgumentParser, path: str = "minnow") -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", helps.get(name)))
                found.extend(_subcommands(sub, f"{path} {name}"))
    return found


def test_every_subcommand_has_a_one_line_description() -> None:
    """`minnow --help` (and each group's) lists every subcommand with a short one-line description."""
    commands = _subcommands(build_parser())
    assert len(commands) >= 20
    for name, text in commands:
        assert text and "\n" not in text and len(text) <= 120, name


def test_version_comes_from_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    """`minnow --version` prints the distribution's version (or says a checkout is not installed) and exits 0."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(
        r"minnow (\d+\.\d+\.\d+\S*|unknown \(not installed: a source checkout\)) \(minnow-stream\)\n",
        capsys.readouterr().out,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["infer", "--batch-size", "0", "x.jsonl"], "argument --batch-size: must be at least 1, got 0"),
        (["tail", "feeds.in", "--timeout", "soon"], "argument --timeout: expected a number, got 'soon'"),
        (["worker", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error is one line on stderr naming the flag, and exit code 2; no usage dump, no traceback."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing input file is reported by name in one line, exit code 2."""
    missing = tmp_path / "absent.jsonl"
    assert main(["infer", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"minnow: {missing}: No such file or directory\n"


def test_a_missing_extra_names_the_extra_to_install() -> None:
    """A command that needs an optional module says which extra installs it; other errors are not swallowed."""
    message = known_failure(ModuleNotFoundError("No module named 'sklearn'", name="sklearn"))
    assert message is not None and "pip install 'minnow-stream[train]'" in message
    assert known_failure(ModuleNotFoundError("x", name="numpy")) is None
    assert known_failure(RuntimeError("bug")) is None


def test_unknown_minnow_variables_are_reported_with_the_closest_name() -> None:
    """A typo in a MINNOW_ name gives one warning line naming the closest known one; known names, the tools'
    own variables and other prefixes are quiet."""
    lines = report_unknown(
        {
            "MINNOW_LABEL_FILE": "x.yaml",
            "MINNOW_ESCALATOIN__MODEL": "m",
            "MINNOW_ENGINE__PRECISION": "int8",
            "minnow_kafka__group_id": "g",
            "MINNOW_KAFKA_CACHE": "/tmp",
            "MINNOW_TEST_KAFKA": "container",
            "PATH": "/bin",
        }
    )
    assert len(lines) == 2
    assert lines[0].startswith("MINNOW_ESCALATOIN__MODEL is set") and lines[0].endswith("MINNOW_ESCALATION__MODEL?")
    assert lines[1].startswith("MINNOW_LABEL_FILE is set") and lines[1].endswith("did you mean MINNOW_LABELS_FILE?")


def test_every_minnow_variable_the_code_reads_by_name_is_known() -> None:
    """Each MINNOW_* name spelled out in the package is a setting or in environment.py's lists (so it is never
    reported as unknown)."""
    known = known_variables()
    names = set()
    for path in (ROOT / "pipeline").rglob("*.py"):
        if path.name == "environment.py":  # its docstring spells a typo on purpose
            continue
        names |= set(re.findall(r"\bMINNOW_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    unknown = {n for n in names if n not in known and not n.startswith(OUTSIDE_PREFIXES)}
    # group prefixes (MINNOW_KAFKA__...) written in messages are not variables
    assert {n for n in unknown if not any(k.startswith(n + "__") for k in known)} == set()
