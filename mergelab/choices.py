"""The closed sets and bounds every layer shares — one place each, imported by the spec, the pages, the
CLI and the analyses, never typed again. Each set is a ``Literal`` type (what the spec validates
against) and the tuple of its values (what pages and loops use)."""

from __future__ import annotations

from typing import Literal, get_args

#: how a base is scored: encoder heads per task, causal label log-likelihood and generation, seq2seq
Architecture = Literal["encoder", "causal", "seq2seq"]
#: a task's metric (accuracy and F1 for labels, rougeL for generation)
Metric = Literal["accuracy", "f1", "rougeL"]
#: how a task's score comes from its rows' scores v and weights w (lm-eval's aggregations that are a
#: function of the weighted mean x = Σw·v / Σw, so the per-row bootstrap resamples exactly what they
#: aggregate): "mean" x, "perplexity" and "weighted_perplexity" exp(−x) (v: log-likelihood per word,
#: w: words), "bits_per_byte" −x / ln 2 (analysis.equations.aggregate)
Aggregation = Literal["mean", "perplexity", "weighted_perplexity", "bits_per_byte"]
#: how a prompt's hidden states become one vector
Pooling = Literal["mean", "last", "first"]
#: the distance between two experts' states in HiddenSim (Eq. 2)
Distance = Literal["l2", "cosine", "cka"]
#: the weights' dtype for evaluation ("auto": the checkpoint's own)
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
#: where a study's units run
ExecutorKind = Literal["local", "ray"]

ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
METRICS: tuple[str, ...] = get_args(Metric)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
POOLINGS: tuple[str, ...] = get_args(Pooling)
DISTANCES: tuple[str, ...] = get_args(Distance)
DTYPES: tuple[str, ...] = get_args(Dtype)
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)

#: seeds are unsigned 32-bit integers (numpy's and torch's generators take them)
SEED_MAX = 2**32 - 1
BATCH_SIZE_MAX = 1024
PROBES_MAX = 1000
EVAL_LIMIT_MAX = 1_000_000
