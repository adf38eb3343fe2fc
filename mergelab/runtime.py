"""One loaded base model, switched between experts and merges by swapping module weights.

The base is loaded once per worker; an expert or a merged model is the base with ΔW added to
the adapted modules (and, for encoders, that task's own classification head). Switching costs a
few tensor additions, never a reload. The model object is private to this runner.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from . import data as data_mod
from .loading import AdapterSet, LoadError

METRIC_DIR = Path(__file__).resolve().parent / "metrics"


@cache
def _metric(name: str):
    """The shipped `evaluate` metric module, loaded once per process (not once per unit)."""
    import evaluate

    return evaluate.load(str(METRIC_DIR / name))


class ModelRunner:
    def __init__(self, adapter_set: AdapterSet, architecture: str, device: torch.device,
                 batch_size: int = 32, trust_remote_code: bool = False):
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
            self.model = cls.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                             use_safetensors=any(folder.glob("*.safetensors")))
        except (OSError, ValueError) as exc:
            raise LoadError(f"cannot load base model from {folder}: {exc}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"  # label scoring and pooling index from the left
        self.model.to(device).eval()
        params = dict(self.model.named_parameters())
        self._param: dict[str, torch.nn.Parameter] = {}
        for key in adapter_set.module_keys.values():
            hits = [n for n in params if n == key or n.endswith("." + key) or key.endswith("." + n)]
            if len(hits) != 1:
                raise LoadError(f"cannot find the model parameter for {key} (candidates: {hits[:3]})")
            self._param[key] = params[hits[0]]
        self._original = {k: p.detach().clone() for k, p in self._param.items()}
        self._head: dict[str, torch.Tensor] = {}
        self.current = "base"

    # --- switching ------------------------------------------------------------------------------
    @torch.no_grad()
    def use(self, label: str, deltas: dict[str, torch.Tensor], head: dict | None = None) -> None:
        for key, p in self._param.items():
            d = deltas.get(key)
            p.copy_(self._original[key] if d is None else self._original[key] + d.to(p.device, p.dtype))
        self._head = {k: v.to(self.device) for k, v in (head or {}).items()}
        self.current = label

    def use_expert(self, task: str) -> None:
        adapter = self.aset.adapters[self.aset.names.index(task)]
        deltas = {key: adapter.delta(module, device=self.device)
                  for module, key in self.aset.module_keys.items()}
        self.use(f"expert:{task}", deltas, adapter.heads)

    def head_of(self, task: str) -> dict:
        return self.aset.adapters[self.aset.names.index(task)].heads

    # --- forward passes -------------------------------------------------------------------------
    def _batches(self, texts: list[str]):
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=256)
            yield {k: v.to(self.device) for k, v in enc.items()}

    @torch.no_grad()
    def hidden_states(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Pooled states of every layer: {'mean'|'first'|'last': (layers+1, n, d)} on the CPU."""
        out = {"mean": [], "first": [], "last": []}
        for enc in self._batches(texts):
            if self.architecture == "seq2seq":  # the encoder's states: what the input became
                res = self.model.get_encoder()(**enc, output_hidden_states=True)
            else:
                res = self.model(**enc, output_hidden_states=True)
            hs = torch.stack(res.hidden_states)  # (L+1, b, t, d)
            mask = enc["attention_mask"].to(hs.dtype)
            out["mean"].append((hs * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None])
            out["first"].append(hs[:, :, 0])
            last = enc["attention_mask"].sum(1) - 1
            if self.tokenizer.padding_side == "left":
                last = torch.full_like(last, hs.shape[2] - 1)
            out["last"].append(hs[:, torch.arange(hs.shape[1]), last])
        return {k: torch.cat(v, dim=1).float().cpu() for k, v in out.items()}

    @torch.no_grad()
    def classify(self, task: data_mod.TaskData) -> list[int]:
        if self.architecture == "causal":
            return self._score_labels(task)
        if self.architecture == "seq2seq":
            return self._score_labels_seq2seq(task)
        if "classifier.weight" not in self._head:
            raise LoadError(f"task {task.name!r}: the adapter has no saved classification head "
                            "(modules_to_save=['classifier']); an encoder needs one per task")
        w, b = self._head["classifier.weight"], self._head.get("classifier.bias")
        preds = []
        for enc in self._batches([task.prompt(r) for r in task.eval_rows]):
            res = self.model(**enc)
            pooled = res.pooler_output if getattr(res, "pooler_output", None) is not None \
                else res.last_hidden_state[:, 0]
            logits = pooled @ w.T + (b if b is not None else 0)
            preds += logits.argmax(-1).tolist()
        return preds

    def _score_labels(self, task: data_mod.TaskData) -> list[int]:
        """Causal LMs: pick the label whose tokens have the highest total log-likelihood."""
        labels = task.spec.labels
        preds = []
        for row in task.eval_rows:
            prompt = task.prompt(row)
            texts = [prompt + " " + lab for lab in labels]
            p_len = len(self.tokenizer(prompt)["input_ids"])
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.no_grad():
                logp = torch.log_softmax(self.model(**enc).logits.float(), -1)
            ids = enc["input_ids"]
            tok_lp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
            mask = enc["attention_mask"][:, 1:].clone()
            mask[:, : max(p_len - 1, 0)] = 0
            preds.append(int((tok_lp * mask).sum(-1).argmax()))
        return preds

    @torch.no_grad()
    def _score_labels_seq2seq(self, task: data_mod.TaskData) -> list[int]:
        """Seq2seq: pick the label whose tokens, as the target sequence, are most likely."""
        labels = task.spec.labels
        lab = self.tokenizer(labels, return_tensors="pt", padding=True)
        lab_ids = lab["input_ids"].to(self.device)
        lab_mask = lab["attention_mask"].to(self.device)
        preds = []
        for enc in self._batches([task.prompt(r) for r in task.eval_rows]):
            b = enc["input_ids"].shape[0]
            scores = []
            for i in range(len(labels)):
                ids = lab_ids[i:i + 1].expand(b, -1)
                logits = self.model(**enc, labels=ids.masked_fill(lab_mask[i:i + 1] == 0, -100)).logits
                logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
                scores.append((logp * lab_mask[i:i + 1]).sum(-1))
            preds += torch.stack(scores, -1).argmax(-1).tolist()
        return preds

    @torch.no_grad()
    def generate(self, task: data_mod.TaskData, max_new_tokens: int = 32) -> list[str]:
        outs = []
        for row in task.eval_rows:
            enc = self.tokenizer(task.prompt(row), return_tensors="pt").to(self.device)
            gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            start = 0 if self.architecture == "seq2seq" else enc["input_ids"].shape[1]
            outs.append(self.tokenizer.decode(gen[0, start:], skip_special_tokens=True))
        return outs

    def evaluate(self, task: data_mod.TaskData) -> float:
        """Score of the current model on ``task`` with the task's metric (0–100)."""
        if task.spec.metric == "rougeL":
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            preds = self.generate(task)
            refs = [str(r[task.spec.target_field]) for r in task.eval_rows]
            return 100.0 * sum(scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(refs, preds)) / len(refs)
        preds = self.classify(task)
        refs = [task.label_index(r) for r in task.eval_rows]
        metric = _metric(task.spec.metric)
        return 100.0 * metric.compute(predictions=preds, references=refs)[task.spec.metric]
