"""Static int8 quantization of the encoder: the CPU mode, the calibration texts and reader, the quantizer call.

Dynamic quantization scales activations per batch, so an event's vector (and its scores) moved with its
batch-mates. Here every activation scale is fixed at build time from calibration text the project ships, so a
row's result depends only on the row itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ModelError

# CPU features that make u8 x s8 int8 products safe: VNNI (and AMX) accumulate them in 32 bits. Plain AVX2
# (vpmaddubsw) adds pairs of u8 x s8 products into int16 and can saturate; there the weights are u8 too (U8U8,
# onnxruntime's advice for AVX2), which measured as faithful as s8 weights and better than reduce_range
# (7-bit s8 weights: dialogue-turn cosine min 0.970 against 0.975).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CPU_FLAGS_SEEN = ("avx2", "avx512f", *INT8_DOT_FLAGS)
CALIBRATION_METHOD = "minmax"
SMOOTH_ALPHA = 0.5  # SmoothQuant migration strength; the paper's default, not tuned
# Windows per calibration batch: texts are grouped and right-padded the way the encoder groups them.
CALIBRATION_BATCH = 16
# Text the project ships, for activation ranges. The dialogue turns are left out: they are the held-out
# fidelity check (tests/unit/test_quantize.py, docs/architecture.md).
_DATA = Path(__file__).resolve().parent.parent / "data"
CALIBRATION_FILES = (
    "moderation_seed.jsonl",
    "moderation_eval.jsonl",
    "redaction_eval.jsonl",
    "eval/iot_severity.jsonl",
    "eval/news_topics_train.jsonl",
    "eval/transcript_intents.jsonl",
    "demo/feeds.jsonl",
    "demo/iot.jsonl",
    "demo/tickets.jsonl",
    "demo/transcripts.jsonl",
)
LABELS_FILE = "labels.yaml"
CALIBRATION_WINDOW = 254  # word pieces per calibration row, as the encoder's default 256-token window
# MatMuls left in fp32, by node name (pipeline/engine/graph.py names them). The attention products multiply two
# activations (nothing to gain from int8 weights).
FP32_MATMULS = ("_attention_scores_", "_attention_context_")
# The FFN down-projection is what a static int8 scale hurts most, measured on the dialogue turns (cosine to fp32,
# mean/min, after smoothing; all weight MatMuls static int8: 0.879/0.678; it kept fp32: 0.994/0.975): the GELU
# output feeding it spans 0..25 on a few tokens ([CLS], [SEP]) and 0..1 on the rest, so one static scale leaves
# ordinary tokens ten int8 steps; smoothing channels cannot fix that. Kept fp32 it cost a third of the speed, so
# on CPUs with an int8 dot product its input is quantized per token at run time instead (per_token_int8): each
# row gets its own scale, so the result still depends on the row alone (0.996/0.977, as fast as the old dynamic).
PER_TOKEN_MATMULS = ("_output_dense_",)
# Without an int8 dot product (u8 weights) the up- and down-projections stay fp32: u8 weights with the
# up-projection int8 measured 0.994/0.966, 7-bit s8 weights (reduce_range) 0.993/0.970, u8 weights with it fp32
# 0.998/0.988. int8 gains little speed on such CPUs anyway.
FP32_MATMULS_WITHOUT_DOT = (*FP32_MATMULS, "_intermediate_dense_", "_output_dense_")
# erf GELU's minimum is -0.16997: the down-projection input is >= -GELU_SHIFT
GELU_SHIFT = 0.17
# u8 zero point of the per-token down-projection input: room for GELU's negative tail below it, 239 steps above.
# Dialogue-turn cosine mean/min: 16 0.9962/0.9823, 32 0.9962/0.9804; zero point 0 after adding GELU_SHIFT (one more
# pass over the 1536 channels, recipe minnow-graph-3) 0.9960/0.9772.
PER_TOKEN_ZERO_POINT = 16
TEXT_FIELDS = ("text", "subject", "body")


@dataclass(frozen=True)
class QuantMode:
    """How the int8 graph is quantized on this CPU; recorded in the manifest."""

    format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    fp32_matmuls: tuple[str, ...]  # name patterns of the MatMuls kept in fp32
    cpu_flags: tuple[str, ...]
    per_token_matmuls: tuple[str, ...] = ()  # name patterns of the MatMuls whose input is quantized per token

    def manifest(self) -> dict[str, Any]:
        return asdict(self) | {
            "fp32_matmuls": list(self.fp32_matmuls),
            "cpu_flags": list(self.cpu_flags),
            "per_token_matmuls": list(self.per_token_matmuls),
        }


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The CPU flags that decide the quantization mode, as /proc/cpuinfo lists them (empty where unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    present = set(match.group(1).split()) if match else set()
    return tuple(f for f in CPU_FLAGS_SEEN if f in present)


# The kinds of CPU `minnow models build --portable` builds an int8 graph for (flags standing for each), so an image
# built on one kind runs the graph meant for the kind it runs on (artifacts.portable_dir).
CPU_KINDS: dict[str, tuple[str, ...]] = {"int8-dot": ("avx2", "avx512_vnni"), "no-int8-dot": ("avx2",)}


def cpu_kind(flags: Sequence[str]) -> str:
    """The CPU_KINDS key for a CPU with these flags."""
    return "int8-dot" if any(f in flags for f in INT8_DOT_FLAGS) else "no-int8-dot"


def choose_mode(flags: Sequence[str]) -> QuantMode:
    """QDQ, u8 activations, per-channel weights: s8 where the CPU has an int8 dot product (and the FFN
    down-projection quantized per token), else u8 (and both FFN projections kept fp32)."""
    dot = any(f in flags for f in INT8_DOT_FLAGS)
    return QuantMode(
        format="QDQ",
        activation_type="QUInt8",
        weight_type="QInt8" if dot else "QUInt8",
        per_channel=True,
        reduce_range=False,
        fp32_matmuls=FP32_MATMULS if dot else FP32_MATMULS_WITHOUT_DOT,
        cpu_flags=tuple(flags),
        per_token_matmuls=PER_TOKEN_MATMULS if dot else (),
    )


def calibration_texts(data_dir: Path = _DATA) -> list[str]:
    """Every text in the bundled calibration files and label sets, in a fixed order."""
    import yaml

    texts: list[str] = []
    for name in CALIBRATION_FILES:
        for line in (data_dir / name).read_bytes().splitlines():
            try:  # the demo files hold deliberately broken lines (for the dead-letter demo): skip them
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                texts.extend(record[k] for k in TEXT_FIELDS if isinstance(record.get(k), str))
    labels = yaml.safe_load((data_dir / LABELS_FILE).read_text())
    for label_set in labels["label_sets"].values():
        texts.append(label_set.get("description", ""))
        for label in label_set["labels"]:
            texts.append(f"{label['name']}: {label.get('description', '')}")
            texts.extend(label.get("examples", []))
    return [t for t in texts if t.strip()]


def kept_in_fp32(node_names: Sequence[str], patterns: Sequence[str] = FP32_MATMULS) -> list[str]:
    """The MatMuls matching `patterns` (those kept fp32, or quantized per token); `_output_dense_` alone would also
    match the attention output, which is static int8."""
    return [n for n in node_names if any(p in n for p in patterns) and "_attention_output_dense_" not in n]


def digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def calibration_batches(
    rows: Sequence[Sequence[int]], batch: int = CALIBRATION_BATCH
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Padded (ids, mask) batches: a fixed shuffle of the rows, so each batch mixes lengths and pads like a
    real mixed batch, and short rows see padding (the encoder pads to the longest row)."""
    from pipeline.engine.encoder import pad  # calibration must pad exactly as inference does

    order = np.random.default_rng(0).permutation(len(rows))
    out = []
    for start in range(0, len(order), batch):
        out.append(pad([rows[i] for i in order[start : start + batch]]))
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared batches.

    `__len__` and `set_range` let the quantizer feed one batch per calibration pass (CalibStridedMinMax = 1):
    the histogram calibrators cannot merge tensors of different sequence lengths within one pass.
    """

    def __init__(self, batches: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]]) -> None:
        self._batches = batches
        self._it: Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]] = iter(batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, NDArray[np.int64]] | None:
        item = next(self._it, None)
        return None if item is None else {"input_ids": item[0], "attention_mask": item[1]}


def quantize_int8(
    fp32: Path,
    out: Path,
    mode: QuantMode,
    batches: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]],
    *,
    exclude: Sequence[str] = (),
    op_types: Sequence[str] = ("MatMul",),
    method: str = CALIBRATION_METHOD,
    extra: dict[str, Any] | None = None,
    cache: Path | None = None,
) -> None:
    """Write the static QDQ int8 graph of `fp32` to `out`, activation ranges from `batches`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    logging.disable(logging.WARNING)  # the quantizer advises shape pre-processing our graph does not need
    try:
        quantize_static(
            str(fp32),
            str(out),
            _Reader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=mode.per_channel,
            reduce_range=mode.reduce_range,
            activation_type=QuantType[mode.activation_type],
            weight_type=QuantType[mode.weight_type],
            nodes_to_exclude=list(exclude),
            calibrate_method=methods[method],
            # MatMul outputs stay fp32 (MatMulIntegerToFloat): requantizing them cost fidelity (dialogue-turn cosine
            # min 0.975 with, 0.985 without) and measured slower
            extra_options={"CalibStridedMinMax": 1, "OpTypesToExcludeOutputQuantization": ["MatMul"]} | (extra or {}),
            calibration_cache_path=cache,
        )
    finally:
        logging.disable(logging.NOTSET)


def build_static_int8(fp32: Path, out: Path, tokenizer: Path, mode: QuantMode) -> dict[str, Any]:
    """Quantize `fp32` into `out` for this CPU's mode; return what the manifest records about it."""
    import onnx
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.no_truncation()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise ModelError("the tokenizer has no [CLS]/[SEP] tokens")
    texts = calibration_texts()
    rows = [[cls_id, *e.ids[:CALIBRATION_WINDOW], sep_id] for e in tok.encode_batch(texts, add_special_tokens=False)]
    batches = calibration_batches(rows)
    model = onnx.load(str(fp32))
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    fp32_nodes = kept_in_fp32(names, mode.fp32_matmuls)
    per_token = kept_in_fp32(names, mode.per_token_matmuls)
    # only the statically quantized MatMuls are smoothed: a Mul before the others would be time spent for nothing
    model = smooth(model, batches, skip=(*fp32_nodes, *per_token))
    smoothed = out.with_name(f"{out.stem}-smoothed.onnx")
    onnx.save(model, str(smoothed))
    try:
        quantize_int8(smoothed, out, mode, batches, exclude=(*fp32_nodes, *per_token))
        int8 = upgrade_opset(onnx.load(str(out)))
        if per_token:
            int8 = per_token_int8(int8, per_token)
        onnx.save(quantize_embeddings(fuse_int8_matmuls(int8)), str(out))
    finally:
        smoothed.unlink(missing_ok=True)
    return mode.manifest() | {
        "calibration": {
            "method": CALIBRATION_METHOD,
            "smooth_alpha": SMOOTH_ALPHA,
            "texts": len(texts),
            "sha256": digest(texts),
            "batch": CALIBRATION_BATCH,
            "files": [*CALIBRATION_FILES, LABELS_FILE],
        },
        "per_token_zero_point": PER_TOKEN_ZERO_POINT if per_token else None,
        "word_embeddings": "s8, one scale per row",
        "onnx_opset": INT8_OPSET,
        "int8_matmul_count": len(names) - len(fp32_nodes),
        "fp32_matmul_count": len(fp32_nodes),
        "per_token_matmul_count": len(per_token),
    }


def smooth(
    model: Any,
    batches: Sequence[tuple[NDArray[np.int64], NDArray[np.int64]]],
    alpha: float = SMOOTH_ALPHA,
    *,
    skip: Sequence[str] = (),
) -> Any:
    """SmoothQuant: move activation outlier channels into the weights, in place; the fp32 function is unchanged.

    A few hidden channels of BERT's LayerNorm outputs are tens of times larger than the rest, so one per-tensor
    activation scale leaves the ordinary channels a handful of int8 steps. For each weight MatMul input X (shared
    by the MatMuls that read it), with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha): (X / s) (one Mul) times
    diag(s) W (folded into the weights) is the same product with evened-out channels. MatMuls named in `skip`
    are left as they are.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    order = [copy.deepcopy(node) for node in graph.node]  # edited, then written back in topological order
    readers: dict[str, list[Any]] = {}
    for node in order:
        if node.op_type == "MatMul" and node.input[1] in weights and node.name not in skip:
            readers.setdefault(node.input[0], []).append(node)
    probe = copy.deepcopy(model)
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in readers)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, NDArray[np.float32]] = {}
    for ids, mask in batches:
        outs = session.run(list(readers), {"input_ids": ids, "attention_mask": mask})
        real = mask.astype(bool)  # padded positions never reach a result: they must not set the scales
        for name, value in zip(readers, outs, strict=True):
            peak = np.abs(value[real]).max(axis=0)
            amax[name] = np.maximum(amax[name], peak) if name in amax else peak
    for name, nodes in readers.items():
        w_peak = np.max([np.abs(numpy_helper.to_array(weights[n.input[1]])).max(axis=1) for n in nodes], axis=0)
        s = (np.maximum(amax[name], 1e-5) ** alpha / np.maximum(w_peak, 1e-5) ** (1 - alpha)).astype(np.float32)
        for n in nodes:
            w = numpy_helper.to_array(weights[n.input[1]]) * s[:, None]
            weights[n.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), n.input[1]))
        value = _value_projection(graph, name, weights)
        if value is not None:  # attention context: fold 1/s into the V projection's columns, no Mul at run time
            for t in value:
                scaled = numpy_helper.to_array(t) / s
                t.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), t.name))
            continue
        # not "<tensor>_scale": the quantizer names its own scale initializers that way
        factor, out = f"{name}_smooth_factor", f"{name}_smoothed"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), factor))
        mul = helper.make_node("Mul", [name, factor], [out], name=out)
        order.insert(next(i for i, n in enumerate(order) if n is nodes[0]), mul)  # before its first reader
        for n in nodes:
            n.input[0] = out
    del graph.node[:]
    graph.node.extend(order)
    return model


def _value_projection(graph: Any, name: str, weights: dict[str, Any]) -> tuple[Any, Any] | None:
    """The V projection's weight and bias when `name` is an attention context with its heads merged, else None.

    The context is softmax(QK^T) V per head, then heads transposed back and merged; its channel j is V's output
    column j, so scaling that column (weight and bias) scales the channel: Reshape <- Transpose <- MatMul(probs,
    V heads) <- Transpose <- Reshape <- Add(bias) <- MatMul(x, W).
    """
    producer = {o: n for n in graph.node for o in n.output}

    def up(tensor: str, op_type: str, index: int = 0) -> str | None:
        node = producer.get(tensor)
        return node.input[index] if node is not None and node.op_type == op_type else None

    v_heads = up(up(name, "Reshape") or "", "Transpose")
    v_heads = up(v_heads or "", "MatMul", 1)
    bias_out = up(up(v_heads or "", "Transpose") or "", "Reshape")
    add = producer.get(bias_out or "")
    if add is None or add.op_type != "Add" or add.input[1] not in weights:
        return None
    matmul = producer.get(add.input[0])
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in weights:
        return None
    return weights[matmul.input[1]], weights[add.input[1]]


def per_token_int8(model: Any, nodes: Sequence[str], zero_point: int = PER_TOKEN_ZERO_POINT) -> Any:
    """Replace each named fp32 MatMul (input: a GELU output; weight: a constant) with an int8 product whose input
    scale is set per token at run time, in place. The model must be at opset >= 21 (`upgrade_opset`).

    Per token (not per batch, as quantize_dynamic did): a row's scale comes from that row alone, so its result
    does not move with its batch-mates, and the few outlier tokens no longer squeeze the others into a handful of
    int8 steps. u8 with a fixed zero point: scale = max(peak / (255 - zp), GELU_SHIFT / zp), so the token's peak
    and GELU's minimum (-0.17) both fit. One blocked QuantizeLinear (a block per token) quantizes, and
    MatMulIntegerToFloat takes the [batch, seq, 1] scales as its A scale. Weights: s8, symmetric, one scale per
    output column. The bias Add stays (onnxruntime folds it into the following SkipLayerNormalization).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    wanted = set(nodes)
    order: list[Any] = []
    for node in graph.node:
        if node.name not in wanted:
            order.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        bias_add = readers[y]
        if len(bias_add) != 1 or bias_add[0].op_type != "Add" or bias_add[0].input[1] not in inits:
            raise ModelError(f"{node.name}: expected a MatMul followed by its bias Add")
        w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-8) / 127.0).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)

        def const(suffix: str, value: NDArray[Any], prefix: str = y) -> str:
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"{prefix}_{suffix}"))
            return f"{prefix}_{suffix}"

        def op(op_type: str, inputs: list[str], suffix: str, prefix: str = y, **attrs: Any) -> str:
            order.append(helper.make_node(op_type, inputs, [f"{prefix}_{suffix}"], name=f"{prefix}_{suffix}", **attrs))
            return f"{prefix}_{suffix}"

        peak = op("ReduceMax", [x, const("last_axis", np.array([-1], dtype=np.int64))], "peak", keepdims=1)
        scale = op(
            "Max",
            [
                op("Mul", [peak, const("inv_levels", np.array(1 / (255 - zero_point), dtype=np.float32))], "range"),
                const("floor", np.array(GELU_SHIFT / zero_point, dtype=np.float32)),
            ],
            "scale",
        )
        zp = const("u8_zero", np.array(zero_point, dtype=np.uint8))
        # a per-axis QuantizeLinear (token axis) or a Mul by 1/scale before a per-tensor one measured slower
        zps = op("Expand", [zp, op("Shape", [scale], "scale_shape")], "zero_points")
        q = op("QuantizeLinear", [x, scale, zps], "q", axis=-1, block_size=int(w.shape[0]))
        order.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                [q, const("weight_q", w_q), scale, const("weight_scale", w_scale), zp],
                [y],
                name=y,
                domain="com.microsoft",
            )
        )
    del graph.node[:]
    graph.node.extend(order)
    _drop_dead(graph)
    _use_contrib_ops(model)
    return model


def fuse_int8_matmuls(model: Any) -> Any:
    """Write each QDQ weight MatMul as one onnxruntime `MatMulIntegerToFloat` (com.microsoft) that also adds the
    MatMul's bias, in place.

    onnxruntime fuses DequantizeLinear -> MatMul itself, but leaves the bias `Add` outside: one more pass over
    the output, and before the FFN's GELU it makes a `BiasGelu`, measured twice as slow as the `Gelu` that
    follows a fused bias. The quantized input's QuantizeLinear stays (shared by Q, K and V).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    replaced: dict[str, Any] = {}  # MatMul name -> fused node
    absorbed: set[str] = set()  # bias Adds now inside a fused node
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if x_dq is None or w_dq is None or x_dq.op_type != w_dq.op_type or w_dq.op_type != "DequantizeLinear":
            continue
        if w_dq.input[0] not in inits:
            continue
        inputs = [x_dq.input[0], w_dq.input[0], x_dq.input[1], w_dq.input[1], x_dq.input[2], w_dq.input[2]]
        w_zero = numpy_helper.to_array(inits[w_dq.input[2]])
        if not w_zero.any():  # symmetric s8 weights: per-column zero points make MLAS correct every column for 0
            inputs[5] = ""
        out = node.output[0]
        after = readers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Add" and after[0].input[1] in inits:
            inputs.append(after[0].input[1])
            out = after[0].output[0]
            absorbed.add(after[0].name)
        replaced[node.name] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [out], name=node.name, domain="com.microsoft"
        )
    order = [replaced.get(n.name, n) for n in graph.node if n.name not in absorbed]
    del graph.node[:]
    graph.node.extend(order)
    _drop_dead(graph)
    _use_contrib_ops(model)
    return model


def _drop_dead(graph: Any) -> None:
    """Remove nodes whose outputs nothing reads, and initializers no node reads."""
    wanted = {o.name for o in graph.output}
    while True:
        used = wanted | {name for n in graph.node for name in n.input}
        alive = [n for n in graph.node if any(o in used for o in n.output)]
        if len(alive) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(alive)
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


INT8_OPSET = 21  # blocked QuantizeLinear (one scale per token) needs opset 21


def upgrade_opset(model: Any, version: int = INT8_OPSET) -> Any:
    """Raise the default-domain opset of `model` to `version`, in place: the reductions' `axes` attribute becomes
    an input (from opset 18), which is the only change our graph needs."""
    from onnx import numpy_helper

    graph = model.graph
    for node in graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            axes = next((a for a in node.attribute if a.name == "axes"), None)
            if axes is not None:
                name = f"{node.name or node.output[0]}_axes"
                graph.initializer.append(numpy_helper.from_array(np.array(list(axes.ints), dtype=np.int64), name))
                node.input.append(name)
                node.attribute.remove(axes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
    model.ir_version = max(model.ir_version, 10)
    return model


def _use_contrib_ops(model: Any) -> None:
    """Declare onnxruntime's com.microsoft domain (MatMulIntegerToFloat) if the model does not yet."""
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def quantize_embeddings(model: Any) -> Any:
    """Store the word-embedding table as s8 with one scale per row (per word piece), in place.

    The fp32 table was 47 MB of the 59 MB file. Each looked-up row is dequantized after the Gather with its own
    scale, gathered alongside, so a token's vector depends on its row alone, as before.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    order: list[Any] = []
    for node in graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.dims[0] < 1000:
            order.append(node)
            continue
        w = numpy_helper.to_array(table).astype(np.float32)
        scale = (np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-8) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        y = node.output[0]
        graph.initializer.extend(
            [numpy_helper.from_array(q, f"{table.name}_q"), numpy_helper.from_array(scale, f"{table.name}_row_scale")]
        )
        ids = node.input[1]
        order.append(helper.make_node("Gather", [f"{table.name}_q", ids], [f"{y}_q"], name=f"{y}_q", axis=0))
        order.append(
            helper.make_node("Gather", [f"{table.name}_row_scale", ids], [f"{y}_scale"], name=f"{y}_scale", axis=0)
        )
        # Cast then Mul: a blocked DequantizeLinear (scale [batch, seq, 1]) measured 7x slower
        cast = helper.make_node("Cast", [f"{y}_q"], [f"{y}_f"], name=f"{y}_f", to=TensorProto.FLOAT)
        order.extend([cast, helper.make_node("Mul", [f"{y}_f", f"{y}_scale"], [y], name=y)])
    del graph.node[:]
    graph.node.extend(order)
    _drop_dead(graph)
    return model
