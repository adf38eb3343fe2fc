"""The closed sets and bounds every layer shares — one place each, imported by the spec, the pages, the
CLI and the analyses, never typed again."""

from __future__ import annotations

#: how a base is scored: encoder heads per task, causal label log-likelihood and generation, seq2seq
ARCHITECTURES = ("encoder", "causal", "seq2seq")
#: a task's metric (accuracy and F1 for labels, rougeL for generation)
METRICS = ("accuracy", "f1", "rougeL")
#: how a prompt's hidden states become one vector
POOLINGS = ("mean", "last", "first")
#: the distance between two experts' states in HiddenSim (Eq. 2)
DISTANCES = ("l2", "cosine", "cka")
#: the weights' dtype for evaluation ("auto": the checkpoint's own)
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: where a study's units run
EXECUTORS = ("local", "ray")

#: seeds are unsigned 32-bit integers (numpy's and torch's generators take them)
SEED_MAX = 2**32 - 1
BATCH_SIZE_MAX = 1024
PROBES_MAX = 1000
EVAL_LIMIT_MAX = 1_000_000
