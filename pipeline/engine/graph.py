"""Build the MiniLM (BERT) sentence encoder as an ONNX graph straight from safetensors weights.

No PyTorch: the graph is written node by node with `onnx.helper`. It takes `input_ids` and
`attention_mask` (int64, [batch, seq]) and returns `embedding` ([batch, hidden], float32): mean pooling
over the attention mask, then L2 normalisation — what sentence-transformers' all-MiniLM-L6-v2 does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is a standard op from 17 on


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, cfg: dict[str, Any]) -> BertConfig:
        return cls(
            hidden_size=int(cfg["hidden_size"]),
            num_heads=int(cfg["num_attention_heads"]),
            num_layers=int(cfg["num_hidden_layers"]),
            intermediate_size=int(cfg["intermediate_size"]),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )


class _GraphWriter:
    """Collects nodes and initializers with unique names."""

    def __init__(self, weights: dict[str, NDArray[Any]]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: NDArray[Any], hint: str) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        arr = self.weights[key].astype(np.float32)
        return self.const(arr.T if transpose else arr, key.replace(".", "_"))

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        # the node is named after its output: the quantizer includes or excludes nodes by name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        # torch Linear stores [out, in]; MatMul wants [in, out]. The named MatMul is what the static quantizer
        # wraps in QDQ (or keeps fp32 by name, pipeline/engine/quantize.py) and onnxruntime fuses to int8 kernels.
        hint = prefix.replace(".", "_")
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", transpose=True)], f"{hint}_matmul")
        return self.op("Add", [y, self.weight(f"{prefix}.bias")], f"{hint}_add")

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            axis=-1,
            epsilon=eps,
        )


def _f32(value: float) -> NDArray[np.float32]:
    return np.array(value, dtype=np.float32)


def _i64(values: list[int]) -> NDArray[np.int64]:
    return np.array(values, dtype=np.int64)


def _embeddings(g: _GraphWriter, cfg: BertConfig) -> str:
    """Word + position + token type 0 (single-segment input), then LayerNorm."""
    word = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], axis=0)
    # positions 0..seq-1 are the first seq rows of the position table: a Slice, which broadcasts over batch
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    table = g.weight("embeddings.position_embeddings.weight")
    pos = g.op("Slice", [table, g.const(_i64([0]), "zero"), seq_len, g.const(_i64([0]), "axis0")])
    token_type0 = g.weights["embeddings.token_type_embeddings.weight"][0].astype(np.float32)
    x = g.op("Add", [g.op("Add", [word, pos]), g.const(token_type0, "token_type0")])
    return g.layer_norm(x, "embeddings.LayerNorm", cfg.layer_norm_eps)


def _attention_mask(g: _GraphWriter, mask_f: str) -> str:
    """Additive mask [batch, 1, 1, seq]: 0 where attended, a large negative where padding."""
    mask4 = g.op("Unsqueeze", [mask_f, g.const(_i64([1, 2]), "axes12")])
    inv = g.op("Sub", [g.const(_f32(1.0), "onef"), mask4])
    return g.op("Mul", [inv, g.const(_f32(-10000.0), "neg")])


def _encoder_layer(g: _GraphWriter, x: str, add_mask: str, i: int, cfg: BertConfig) -> str:
    p = f"encoder.layer.{i}"
    head_dim = cfg.hidden_size // cfg.num_heads
    split_heads = g.const(_i64([0, 0, cfg.num_heads, head_dim]), "split_heads")

    def heads_of(t: str) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, split_heads])], perm=[0, 2, 1, 3])

    q = heads_of(g.linear(x, f"{p}.attention.self.query"))
    k = heads_of(g.linear(x, f"{p}.attention.self.key"))
    v = heads_of(g.linear(x, f"{p}.attention.self.value"))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op(
        "Mul",
        [
            g.op("MatMul", [q, kt], f"{p}_attention_scores".replace(".", "_")),
            g.const(_f32(1.0 / math.sqrt(head_dim)), "scale"),
        ],
    )
    probs = g.op("Softmax", [g.op("Add", [scores, add_mask])], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{p}_attention_context".replace(".", "_"))], perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const(_i64([0, 0, cfg.hidden_size]), "merge_heads")])
    attn = g.linear(ctx, f"{p}.attention.output.dense")
    x = g.layer_norm(g.op("Add", [attn, x]), f"{p}.attention.output.LayerNorm", cfg.layer_norm_eps)

    # exact (erf) GELU, as BERT's "gelu": 0.5 * h * (1 + erf(h / sqrt 2))
    h = g.linear(x, f"{p}.intermediate.dense")
    erf = g.op("Erf", [g.op("Div", [h, g.const(_f32(math.sqrt(2.0)), "sqrt2")])])
    h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const(_f32(1.0), "one_f")])]), g.const(_f32(0.5), "half")])
    out = g.linear(h, f"{p}.output.dense")
    return g.layer_norm(g.op("Add", [out, x]), f"{p}.output.LayerNorm", cfg.layer_norm_eps)


def _pool_and_normalise(g: _GraphWriter, x: str, mask_f: str) -> None:
    """Mean over attended tokens, then L2 normalisation, into the graph output `embedding`."""
    mask3 = g.op("Unsqueeze", [mask_f, g.const(_i64([2]), "axis2")])
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3]), g.const(_i64([1]), "axis1")], keepdims=0)
    count = g.op("ReduceSum", [mask3, g.const(_i64([1]), "axis1b")], keepdims=0)
    count = g.op("Max", [count, g.const(_f32(1e-9), "eps_count")])
    mean = g.op("Div", [summed, count])
    norm = g.op("ReduceL2", [mean], axes=[1], keepdims=1)  # axes is an attribute until opset 18
    norm = g.op("Max", [norm, g.const(_f32(1e-12), "eps_norm")])
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))


def build_encoder_graph(weights: dict[str, NDArray[Any]], cfg: BertConfig) -> onnx.ModelProto:
    """Return the fp32 sentence-encoder model for these BERT weights."""
    g = _GraphWriter(weights)
    x = _embeddings(g, cfg)
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    add_mask = _attention_mask(g, mask_f)
    for i in range(cfg.num_layers):
        x = _encoder_layer(g, x, add_mask, i, cfg)
    _pool_and_normalise(g, x, mask_f)

    graph = helper.make_graph(
        g.nodes,
        "minilm_sentence_encoder",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", cfg.hidden_size])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minnow")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model
