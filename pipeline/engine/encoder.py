"""The sentence encoder: tokenize, chunk long texts, batch by length bucket, run ONNX Runtime.

Everything here is synchronous and CPU-bound; `pipeline.engine.runtime` moves it off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.engine.artifacts import ModelFiles
from pipeline.engine.text import clean, split_sentences
from pipeline.errors import InferenceError, ModelError
from pipeline.models import Truncation
from pipeline.settings import EngineSettings

Vectors = NDArray[np.float32]
# Rows join a batch while they are at most 1.5x (+8 tokens) the batch's shortest row: fewer, fuller batches
# for short texts, no pad-to-longest blow-up when lengths are spread.
BUCKET_GROWTH = 1.5
BUCKET_SLACK = 8


@dataclass(frozen=True)
class TextEmbedding:
    """One text's embedding, and the pieces it was made from."""

    vector: Vectors  # (dim,), L2-normalised
    segments: list[str]  # the sentences (summary mode) or chunks the text was cut into
    segment_vectors: Vectors  # (len(segments), dim)
    segment_sources: list[int]  # for each segment, the index of the sentence it came from
    tokens: int
    truncated: bool  # True when part of the input was not embedded (see truncated_by)
    truncated_by: Truncation | None = None  # the limit that left input out


@dataclass(frozen=True)
class _Unit:
    """One model window: [CLS] ids [SEP]."""

    owner: int
    ids: list[int]


class Encoder:
    """A loaded ONNX Runtime session and its tokenizer."""

    def __init__(self, files: ModelFiles, settings: EngineSettings) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.files = files
        self.settings = settings
        try:
            tok = Tokenizer.from_file(str(files.tokenizer_path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = settings.intra_op_threads
            options.inter_op_num_threads = 1
            # Idle ONNX Runtime threads spin by default, taking the CPU that tokenizing, the tasks and a
            # streaming worker's event loop need between batches; measured no slower with spinning off.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(str(files.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime and tokenizers raise their own untyped errors
            raise ModelError(f"cannot load the model from {files.directory}: {exc}") from exc
        tok.no_padding()
        tok.no_truncation()
        self._tokenizer = tok
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ModelError("the tokenizer has no [CLS]/[SEP] tokens")
        self._cls, self._sep = cls_id, sep_id
        self.dim = int(files.manifest["config"]["hidden_size"])
        self._window = settings.max_seq_tokens - 2  # room for [CLS] and [SEP]

    # ------------------------------------------------------------------------------------------ public
    def embed(self, texts: Sequence[str]) -> Vectors:
        """One vector per text; long texts are chunked and their chunk vectors averaged."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([d.vector for d in self.embed_documents(texts, [False] * len(texts))])

    def embed_documents(self, texts: Sequence[str | Sequence[str]], by_sentence: Sequence[bool]) -> list[TextEmbedding]:
        """Embed each text in one encoder pass.

        `by_sentence[i]` embeds text i sentence by sentence (what the summarizer needs); otherwise the text is
        one window, or consecutive sentences packed into windows when it is longer than one. A text given as a
        list of strings is taken as already split (dialogue turns, say) and embedded piece by piece.
        """
        units: list[_Unit] = []
        plans: list[tuple[list[str], list[int], list[int], int, bool, Truncation | None]] = []
        cleaned = {i: clean(t, self.settings.max_text_chars) for i, t in enumerate(texts) if isinstance(t, str)}
        # Most events are short: tokenize them whole, in one parallel call, before deciding whether to split.
        whole = [i for i, c in cleaned.items() if c.text and not by_sentence[i]]
        encoded = self._tokenizer.encode_batch([cleaned[i].text for i in whole], add_special_tokens=False)
        whole_ids = {i: enc.ids for i, enc in zip(whole, encoded, strict=True)}
        for owner, (raw, per_sentence) in enumerate(zip(texts, by_sentence, strict=True)):
            if isinstance(raw, str):
                text = cleaned[owner].text
                ids = whole_ids.get(owner)
                if ids is not None and len(ids) <= self._window:
                    segments, segment_ids, sources = [text], [ids], [0]
                else:
                    segments, segment_ids, sources = self._segment(text, per_sentence)
                truncated = cleaned[owner].truncated
            else:
                segments, segment_ids, sources, truncated = self._segment_presplit(raw)
            cut_by: Truncation | None = "max_text_chars" if truncated else None
            keep = within_budget(
                [len(ids) + 2 for ids in segment_ids],
                self.settings.max_tokens_per_event,
                self.settings.max_chunks_per_text,
            )
            if len(keep) < len(segment_ids):
                segments = [segments[i] for i in keep]
                segment_ids = [segment_ids[i] for i in keep]
                sources = [sources[i] for i in keep]
                # What was embedded is now a sample of the text: the budget is the limit worth naming.
                truncated, cut_by = True, "max_tokens_per_event"
            weights = [max(len(ids), 1) for ids in segment_ids]
            units.extend(_Unit(owner, [self._cls, *ids, self._sep]) for ids in segment_ids)
            plans.append((segments, sources, weights, sum(len(ids) for ids in segment_ids), truncated, cut_by))
        vectors = self._run_units(units)
        out: list[TextEmbedding] = []
        pos = 0
        for segments, sources, weights, tokens, truncated, cut_by in plans:
            seg_vecs = vectors[pos : pos + len(segments)]
            pos += len(segments)
            out.append(
                TextEmbedding(
                    vector=_weighted_mean(seg_vecs, weights),
                    segments=segments,
                    segment_vectors=seg_vecs,
                    segment_sources=sources,
                    tokens=tokens,
                    truncated=truncated,
                    truncated_by=cut_by,
                )
            )
        return out

    def token_count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    # ---------------------------------------------------------------------------------------- segmenting
    def _segment(self, text: str, per_sentence: bool) -> tuple[list[str], list[list[int]], list[int]]:
        """Cut a text longer than a window, or meant for the summarizer, into sentences (packed unless per_sentence)."""
        if not text:
            return [""], [[]], [0]  # an empty text still gets a (defined) vector: [CLS][SEP]
        return self._windows(split_sentences(text) or [text], pack=not per_sentence)

    def _segment_presplit(self, pieces: Sequence[str]) -> tuple[list[str], list[list[int]], list[int], bool]:
        total = 0
        cleaned: list[str] = []
        truncated = False
        for piece in pieces:
            c = clean(piece, self.settings.max_text_chars)
            truncated |= c.truncated
            total += len(c.text)
            if total > self.settings.max_text_chars:
                truncated = True
                break
            cleaned.append(c.text)
        if not any(cleaned):
            return [""], [[]], [0], truncated
        segments, ids, sources = self._windows(cleaned, pack=False)
        return segments, ids, sources, truncated

    def _windows(self, sentences: Sequence[str], *, pack: bool) -> tuple[list[str], list[list[int]], list[int]]:
        encoded = self._tokenizer.encode_batch(list(sentences), add_special_tokens=False)
        segments: list[str] = []
        segment_ids: list[list[int]] = []
        sources: list[int] = []
        for source, (sentence, enc) in enumerate(zip(sentences, encoded, strict=True)):
            ids = list(enc.ids)
            if not ids:
                continue  # nothing the model can see (an empty dialogue turn)
            if len(ids) > self._window:  # a run-on "sentence": cut it into windows, keeping every token
                for start in range(0, len(ids), self._window):
                    lo, hi = enc.offsets[start][0], enc.offsets[min(start + self._window, len(ids)) - 1][1]
                    segments.append(sentence[lo:hi])
                    segment_ids.append(ids[start : start + self._window])
                    sources.append(source)
                continue
            if pack and segment_ids and len(segment_ids[-1]) + len(ids) <= self._window:
                segments[-1] = f"{segments[-1]} {sentence}"
                segment_ids[-1] = segment_ids[-1] + ids
                continue
            segments.append(sentence)
            segment_ids.append(ids)
            sources.append(source)
        if not segments:
            return [""], [[]], [0]
        return segments, segment_ids, sources

    # ----------------------------------------------------------------------------------------- batching
    def plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Group unit indices into length buckets: sorted by length, cut by windows per batch and padded tokens."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = lengths[i]  # sorted ascending: the newcomer is the longest so far
            if current and (
                len(current) >= self.settings.max_windows_per_batch
                or (len(current) + 1) * longest > self.settings.max_tokens_per_batch
                # a new length bucket once padding to the newcomer would waste a third of the shortest rows
                or longest > BUCKET_GROWTH * lengths[current[0]] + BUCKET_SLACK
            ):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _run_units(self, units: Sequence[_Unit]) -> Vectors:
        out = np.zeros((len(units), self.dim), dtype=np.float32)
        for batch in self.plan_batches([len(u.ids) for u in units]):
            out[batch] = self.run_padded(*pad([units[i].ids for i in batch]))
        return out

    def window_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] ids [SEP] for each text's first window: what the bare encoder benchmark feeds the model."""
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[self._cls, *e.ids[: self._window], self._sep] for e in encoded]

    def run_padded(self, ids: NDArray[np.int64], mask: NDArray[np.int64]) -> Vectors:
        """The bare encoder call: one padded batch in, one normalised vector per row out."""
        try:
            result = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise InferenceError(f"encoder failed on a batch of {len(ids)}: {exc}") from exc
        vectors: Vectors = np.asarray(result, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise InferenceError(f"encoder returned shape {vectors.shape} for {len(ids)} rows")
        return vectors


def within_budget(lengths: Sequence[int], budget_tokens: int, max_pieces: int) -> list[int]:
    """Which pieces of one text to embed, in text order: all of them when they fit the per-event budget; otherwise
    the most evenly spaced pieces, first and last included, that fit the budget and the piece cap. The cost of one
    event stays bounded whatever its length, and the sample still spans the whole text.
    """
    n = len(lengths)
    if n <= max_pieces and sum(lengths) <= budget_tokens:
        return list(range(n))
    k = min(n, max_pieces, max(1, budget_tokens // max(1, min(lengths))))
    while k > 1:
        picked = sorted({round(x) for x in np.linspace(0, n - 1, k)})
        if sum(lengths[i] for i in picked) <= budget_tokens:
            return picked
        k -= 1
    return [0]


def pad(rows: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Right-pad id rows to the longest one; the mask marks real tokens."""
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _weighted_mean(vectors: Vectors, weights: Sequence[int]) -> Vectors:
    if len(vectors) == 1:
        only: Vectors = vectors[0]
        return only
    mean: Vectors = np.average(vectors, axis=0, weights=np.asarray(weights, dtype=np.float32)).astype(np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
