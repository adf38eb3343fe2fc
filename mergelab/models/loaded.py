"""One loaded base model, switched between experts and merges by swapping module weights.

The base is loaded once per worker; an expert or a merged model is the base with ΔW added to
the adapted modules (and, for encoders, that task's own classification head). Switching costs a
few tensor additions, never a reload. How it is scored depends on its architecture: see
:mod:`mergelab.models.architectures`.
"""

from __future__ import annotations

import inspect

import torch

from ..io.adapters import AdapterSet
from ..io.errors import LoadError
from . import evaluation
from .architectures import SCORERS


class LoadedModel:
    def __init__(
        self,
        adapter_set: AdapterSet,
        architecture: str,
        device: torch.device,
        batch_size: int = 32,
        trust_remote_code: bool = False,
        dtype: str = "auto",
    ):
        from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.aset = adapter_set
        self.architecture = architecture
        self.device = device
        self.batch_size = batch_size
        folder = adapter_set.base.folder
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
            cls = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}.get(architecture, AutoModel)
            # pickle-only folders got past BaseWeights only with allow_pickle
            self.model = cls.from_pretrained(
                folder,
                trust_remote_code=trust_remote_code,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                use_safetensors=any(folder.glob("*.safetensors")),
            )
        except (OSError, ValueError) as exc:
            raise LoadError(f"cannot load base model from {folder}: {exc}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"  # pooling indexes from the left; generate() pads left itself
        self.model.to(device).eval()
        self.forward_args = set(inspect.signature(self.model.forward).parameters)
        self.scorer = SCORERS[architecture](self)
        self.scorer.check()
        params = dict(self.model.named_parameters())
        self._param: dict[str, torch.nn.Parameter] = {}
        for key in adapter_set.module_keys.values():
            hits = [n for n in params if n == key or n.endswith("." + key) or key.endswith("." + n)]
            if len(hits) != 1:
                raise LoadError(f"cannot find the model parameter for {key} (candidates: {hits[:3]})")
            self._param[key] = params[hits[0]]
        self._original = {k: p.detach().clone() for k, p in self._param.items()}
        self.head: dict[str, torch.Tensor] = {}
        self.current = "base"

    # --- switching ------------------------------------------------------------------------------
    @torch.no_grad()
    def use(self, label: str, deltas: dict[str, torch.Tensor], head: dict | None = None) -> None:
        for key, p in self._param.items():
            d = deltas.get(key)
            # W₀ + ΔW in float32, rounded once to the model's dtype (bf16 + bf16(ΔW) rounds twice)
            p.copy_(self._original[key] if d is None else self._original[key].float() + d.to(p.device, torch.float32))
        self.head = {k: v.to(self.device, torch.float32) for k, v in (head or {}).items()}
        self.current = label

    def use_expert(self, task: str) -> None:
        adapter = self.aset.adapters[self.aset.names.index(task)]
        deltas = {key: adapter.delta(module, device=self.device) for module, key in self.aset.module_keys.items()}
        self.use(f"expert:{task}", deltas, adapter.heads)

    def head_of(self, task: str) -> dict:
        """The task's own heads (an encoder's classifier); none for a task without an adapter (a
        held-out benchmark, on causal and seq2seq bases only)."""
        if task not in self.aset.names:
            return {}
        return self.aset.adapters[self.aset.names.index(task)].heads

    # --- forward passes -------------------------------------------------------------------------
    def batches(self, texts: list[str]):
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True, max_length=256
            )
            yield {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def hidden_states(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Pooled states of every layer: {'mean'|'first'|'last': (layers+1, n, d)} on the CPU."""
        out = {"mean": [], "first": [], "last": []}
        for enc in self.batches(texts):
            res = self.scorer.hidden_forward(enc)
            mask = enc["attention_mask"].float()
            last = enc["attention_mask"].sum(1) - 1
            rows = torch.arange(mask.shape[0], device=mask.device)
            pooled = {"mean": [], "first": [], "last": []}
            for h in res.hidden_states:  # layer by layer, pooled in float32 (a bf16 sum over tokens drifts)
                h = h.float()
                pooled["mean"].append((h * mask[:, :, None]).sum(1) / mask.sum(1)[:, None])
                pooled["first"].append(h[:, 0])
                pooled["last"].append(h[rows, last])
            for k, v in pooled.items():
                out[k].append(torch.stack(v).cpu())  # (layers+1, b, d)
        return {k: torch.cat(v, dim=1) for k, v in out.items()}

    def classify(self, task) -> list[int]:
        """The predicted label index per eval row."""
        return self.scorer.classify(task)

    def label_scores(self, task) -> torch.Tensor:
        """(rows, labels): Σ log p of each label's tokens given the row's prompt."""
        return self.scorer.label_scores(task)

    def generate(self, task, max_new_tokens: int | None = None) -> list[str]:
        return self.scorer.generate(task, max_new_tokens)

    def evaluate(self, task) -> float:
        """Score of the current model on ``task`` with the task's metric (0–100)."""
        return self.evaluate_rows(task).score

    def evaluate_rows(self, task) -> evaluation.Evaluation:
        """Score of the current model on ``task`` and its per-row records."""
        if task.spec.metric == "rougeL":
            return evaluation.generation_evaluation(task, self.generate(task))
        return evaluation.classification_evaluation(task, self.label_scores(task))
