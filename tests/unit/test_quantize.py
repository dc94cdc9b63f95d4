"""The static int8 encoder: faithful to fp32, batch-independent, and built for the CPU it runs on."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.engine import Encoder, quantize
from pipeline.engine.artifacts import _manifest_valid, _source_info, artifact_dir, weights_dir
from pipeline.models import AnyEvent, ErrorRecord, FeedEvent, Result, TranscriptSegment
from pipeline.stages.infer import MiniModel
from pipeline.stages.validate import decode_line

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "pipeline" / "data"
# Score drift allowed between batch sizes: static scales leave only fp32 summation-order noise (measured
# at most 1e-7 on the embeddings; dynamic quantization moved scores by up to 0.13).
SCORE_TOLERANCE = 1e-4
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _bundled_events() -> list[AnyEvent]:
    """The bundled example and demo events that decode, plus held-out news and transcript eval texts."""
    events: list[AnyEvent] = []
    for path in [ROOT / "docs" / "examples" / "events.jsonl", *sorted((DATA / "demo").glob("*.jsonl"))]:
        for raw in path.read_bytes().splitlines():
            event = decode_line(raw) if raw.strip() else None
            if event is not None and not isinstance(event, ErrorRecord):
                events.append(event)
    for i, line in enumerate((DATA / "eval" / "news_topics.jsonl").read_text().splitlines()[:40]):
        events.append(FeedEvent(id=f"news-{i}", source="eval", text=json.loads(line)["text"], created_at=NOW))
    for i, line in enumerate((DATA / "eval" / "transcript_intents.jsonl").read_text().splitlines()[:30]):
        text = json.loads(line)["text"]
        events.append(TranscriptSegment(id=f"tx-{i}", conversation_id=f"c{i}", seq=0, speaker="customer", text=text))
    return events


EVENTS = _bundled_events()


@pytest.fixture(scope="module")
def alone(mini_model: MiniModel) -> dict[str, Result]:
    """Every bundled event processed on its own: the reference a batched run must match."""
    out: dict[str, Result] = {}
    for event in EVENTS:
        [result] = mini_model.process([event])
        assert isinstance(result, Result)
        out[event.id] = result
    return out


def _assert_same(batched: Result, single: Result) -> None:
    assert batched.route == single.route, batched.id
    for field in ("classification", "moderation", "summary", "anomaly", "language"):
        a, b = getattr(batched, field), getattr(single, field)
        assert (a is None) == (b is None), (batched.id, field)
    if single.classification is not None and batched.classification is not None:
        assert batched.classification.label == single.classification.label
        assert batched.classification.confidence == pytest.approx(single.classification.confidence, abs=SCORE_TOLERANCE)
        for label, score in single.classification.scores.items():
            assert batched.classification.scores[label] == pytest.approx(score, abs=SCORE_TOLERANCE)
    if single.moderation is not None and batched.moderation is not None:
        assert batched.moderation.flagged == single.moderation.flagged
        for category, score in single.moderation.categories.items():
            assert batched.moderation.categories[category] == pytest.approx(score, abs=SCORE_TOLERANCE)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, derandomize=True)
@given(order=st.permutations(range(len(EVENTS))), batch=st.sampled_from([1, 8, 32]))
def test_scores_and_routes_do_not_depend_on_batch_mates(
    mini_model: MiniModel, alone: dict[str, Result], order: Sequence[int], batch: int
) -> None:
    """Any shuffle of the bundled events, cut into batches of 1, 8 or 32, scores and routes each event as alone."""
    events = [EVENTS[i] for i in order]
    for start in range(0, len(events), batch):
        for result in mini_model.process(events[start : start + batch]):
            assert isinstance(result, Result)
            _assert_same(result, alone[result.id])


def test_a_short_text_padded_beside_a_long_one_embeds_as_alone(encoder: Encoder) -> None:
    """Right-padding a short text to a long batch-mate's length leaves its int8 vector as it is alone."""
    short = "Router keeps rebooting."
    long = " ".join(["The council met on Tuesday to discuss the transit plan and the budget for next year."] * 8)
    alone = encoder.embed([short])[0]
    batched = encoder.embed([long, short, long])[1]
    assert np.abs(batched - alone).max() < 1e-5


@pytest.mark.slow
def test_int8_embeddings_are_faithful_to_fp32_on_the_dialogue_turns(encoder: Encoder, encoder_fp32: Encoder) -> None:
    """Every bundled dialogue turn (held out from calibration): int8-to-fp32 cosine mean >= 0.99, min >= 0.97.

    Measured 0.996 / 0.982 with the VNNI build (s8 weights, minnow-graph-4) and 0.998 / 0.992 with the AVX2 build
    (u8 weights, FFN up- and down-projections fp32), both on an AVX512-VNNI CPU.
    """
    turns = [
        t["text"]
        for line in (DATA / "dialogue_summaries.jsonl").read_text().splitlines()
        for t in json.loads(line)["turns"]
        if t["text"].strip()
    ]
    cos = np.sum(encoder.embed(turns) * encoder_fp32.embed(turns), axis=1)
    assert len(turns) > 500
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_cpu_flags_pick_the_weight_type(tmp_path: Path) -> None:
    """s8 weights where the CPU has an int8 dot product (VNNI, AMX); u8 weights on plain AVX2; flags recorded."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni\n")
    assert quantize.cpu_flags(info) == ("avx2", "avx512f", "avx512_vnni")
    vnni = quantize.choose_mode(quantize.cpu_flags(info))
    assert (vnni.weight_type, vnni.activation_type, vnni.per_channel) == ("QInt8", "QUInt8", True)
    assert vnni.manifest()["cpu_flags"] == ["avx2", "avx512f", "avx512_vnni"]
    info.write_text("flags\t\t: fpu sse avx avx2 fma\n")
    assert quantize.choose_mode(quantize.cpu_flags(info)).weight_type == "QUInt8"
    assert quantize.choose_mode(("amx_int8",)).weight_type == "QInt8"
    assert quantize.cpu_flags(tmp_path / "missing") == ()


def test_calibration_uses_bundled_text_but_not_the_fidelity_turns() -> None:
    """Calibration reads the package's own files (readable, in a fixed order) and leaves the dialogue turns out."""
    texts = quantize.calibration_texts()
    assert len(texts) > 1000 and texts == quantize.calibration_texts()
    turns = {
        t["text"]
        for line in (DATA / "dialogue_summaries.jsonl").read_text().splitlines()
        for t in json.loads(line)["turns"]
    }
    assert "dialogue_summaries.jsonl" not in quantize.CALIBRATION_FILES
    assert len(turns & set(texts)) <= 0.01 * len(turns)  # stock phrases only ("Okay.", "You're welcome...")
    assert quantize.digest(texts) != quantize.digest(texts[1:])


def test_calibration_batches_pad_like_the_encoder() -> None:
    """Mixed-length rows are right-padded to the batch's longest, with the mask marking real tokens."""
    rows = [[101, 7, 102], [101, 7, 8, 9, 10, 102], [101, 102]]
    batches = quantize.calibration_batches(rows, batch=3)
    [(ids, mask)] = batches
    assert ids.shape == (3, 6) and sorted(mask.sum(axis=1).tolist()) == [2, 3, 6]
    assert all(ids[i, mask[i] == 0].sum() == 0 for i in range(3))


def test_the_attention_products_stay_fp32_and_the_down_projection_is_quantized_per_token() -> None:
    """Q/K/V, the attention output and FFN up-projections are static int8, the attention products fp32, the
    down-projection per-token int8 on an int8-dot CPU; without one both FFN projections stay fp32."""
    names = [
        "encoder_layer_0_attention_self_query_matmul_1",
        "encoder_layer_0_attention_scores_5",
        "encoder_layer_0_attention_context_9",
        "encoder_layer_0_attention_output_dense_matmul_12",
        "encoder_layer_0_intermediate_dense_matmul_20",
        "encoder_layer_0_output_dense_matmul_30",
    ]
    vnni = quantize.choose_mode(("avx2", "avx512_vnni"))
    assert quantize.kept_in_fp32(names, vnni.fp32_matmuls) == [names[1], names[2]]
    assert quantize.kept_in_fp32(names, vnni.per_token_matmuls) == [names[5]]
    avx2 = quantize.choose_mode(("avx2",))  # no int8 dot product: both FFN projections stay fp32
    assert quantize.kept_in_fp32(names, avx2.fp32_matmuls) == [names[1], names[2], names[4], names[5]]
    assert avx2.per_token_matmuls == ()


def test_per_token_int8_is_close_to_fp32_and_ignores_batch_mates() -> None:
    """The per-token int8 product of a GELU-like input is within int8 error of fp32, and a row with a 25x outlier
    token beside it (which would set a per-batch scale) leaves an ordinary row's result exactly unchanged."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="layer_0_output_dense_matmul"),
        helper.make_node("Add", ["mm", "b"], ["y"], name="y"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp32 = ort.InferenceSession(model.SerializeToString())
    int8_model = quantize.per_token_int8(
        quantize.upgrade_opset(onnx.load_from_string(model.SerializeToString())), ["layer_0_output_dense_matmul"]
    )
    onnx.checker.check_model(int8_model)
    assert "MatMul" not in [n.op_type for n in int8_model.graph.node]
    assert "MatMulIntegerToFloat" in [n.op_type for n in int8_model.graph.node]
    int8 = ort.InferenceSession(int8_model.SerializeToString())
    h = rng.normal(size=(2, 5, 16)).astype(np.float32) * 2
    x = (0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))).astype(np.float32)  # GELU outputs, >= -0.17
    want, got = fp32.run(None, {"x": x})[0], int8.run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    outlier = x.copy()
    outlier[1, 0] *= 25
    np.testing.assert_array_equal(int8.run(None, {"x": outlier})[0][0], got[0])


def test_smoothing_leaves_the_fp32_function_unchanged() -> None:
    """SmoothQuant rescales a MatMul's input channels and its weight rows: same outputs, evened-out inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    table[:, 3] *= 40  # one outlier channel, as BERT's LayerNorm outputs have
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"], name="x"),
        helper.make_node("Cast", ["attention_mask"], ["m"], name="m", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"], name="m3"),
        helper.make_node("Mul", ["x", "m3"], ["xm"], name="xm"),
        helper.make_node("MatMul", ["xm", "w"], ["embedding"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", "s", 4])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batches = quantize.calibration_batches([[1, 2, 3], [4, 5, 6, 7, 8], [9]], batch=2)
    feed = {"input_ids": batches[0][0], "attention_mask": batches[0][1]}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    smoothed = quantize.smooth(onnx.load_from_string(model.SerializeToString()), batches)
    onnx.checker.check_model(smoothed)
    after = ort.InferenceSession(smoothed.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-4)
    assert [n.op_type for n in smoothed.graph.node][-2:] == ["Mul", "MatMul"]
    factor = next(numpy_helper.to_array(t) for t in smoothed.graph.initializer if t.name.endswith("_smooth_factor"))
    assert factor[3] < factor[[0, 1, 2, 4, 5, 6, 7]].min()  # the outlier channel is scaled down most


def test_an_artifact_built_for_another_cpu_mode_is_rebuilt(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached manifest is valid for this CPU; a CPU wanting the other weight type invalidates it."""
    cache = encoder.files.directory.parent.parent
    folder = artifact_dir(cache)
    source = _source_info(weights_dir(cache))
    assert _manifest_valid(folder, source) is not None
    here = quantize.choose_mode(quantize.cpu_flags())
    other = dataclasses.replace(here, weight_type="QInt8" if here.weight_type == "QUInt8" else "QUInt8")
    monkeypatch.setattr(quantize, "choose_mode", lambda flags: other)
    assert _manifest_valid(folder, source) is None


def test_word_embeddings_are_s8_per_row_and_close_to_fp32() -> None:
    """The word-embedding table is stored as s8 with a scale per row: each looked-up vector is within half an int8
    step of its fp32 row (an outlier row does not coarsen the others), and the file shrinks about fourfold."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(size=(2000, 64)).astype(np.float32)
    table[7] *= 50  # one outlier row
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["y"], name="y", axis=0)],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 64])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    small = quantize.quantize_embeddings(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(small)
    assert len(small.SerializeToString()) < 0.3 * len(model.SerializeToString())
    ids = np.array([[1, 7, 1999], [0, 3, 7]], dtype=np.int64)
    got = ort.InferenceSession(small.SerializeToString()).run(None, {"input_ids": ids})[0]
    step = np.abs(table[ids]).max(axis=-1, keepdims=True) / 127
    assert np.all(np.abs(got - table[ids]) <= 0.5 * step + 1e-6)


def test_fused_int8_matmuls_compute_what_the_qdq_graph_does() -> None:
    """Rewriting QDQ MatMul + bias Add as one MatMulIntegerToFloat (bias inside) leaves the results unchanged."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w_q = rng.integers(-127, 128, size=(16, 6)).astype(np.int8)
    inits = [
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array((rng.random(6) / 100).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(6, dtype=np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.05, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(np.array(120, dtype=np.uint8), "x_zero"),
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="xq"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="xd"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], name="wd", axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "bias"], ["y"], name="y"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fused = quantize.fuse_int8_matmuls(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(fused)
    assert [n.op_type for n in fused.graph.node] == ["QuantizeLinear", "MatMulIntegerToFloat"]
    x = rng.normal(size=(2, 3, 16)).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    want = ort.InferenceSession(model.SerializeToString(), options).run(None, {"x": x})[0]
    got = ort.InferenceSession(fused.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
