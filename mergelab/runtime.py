"""One loaded base model, switched between experts and merges by swapping module weights.

The base is loaded once per worker; an expert or a merged model is the base with ΔW added to
the adapted modules (and, for encoders, that task's own classification head). Switching costs a
few tensor additions, never a reload. The model object is private to this runner.
"""

from __future__ import annotations

import inspect
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
                 batch_size: int = 32, trust_remote_code: bool = False, dtype: str = "auto"):
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
                                             dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                             use_safetensors=any(folder.glob("*.safetensors")))
        except (OSError, ValueError) as exc:
            raise LoadError(f"cannot load base model from {folder}: {exc}") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"  # pooling indexes from the left; generate() pads left itself
        self.model.to(device).eval()
        self._forward_args = set(inspect.signature(self.model.forward).parameters)
        if architecture == "causal" and "position_ids" not in self._forward_args:
            raise LoadError(f"{type(self.model).__name__} takes no position_ids; label scoring pads on the "
                            "left and needs them to compute each sequence as if alone")
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
            # W₀ + ΔW in float32, rounded once to the model's dtype (bf16 + bf16(ΔW) rounds twice)
            p.copy_(self._original[key] if d is None else self._original[key].float() + d.to(p.device, torch.float32))
        self._head = {k: v.to(self.device, torch.float32) for k, v in (head or {}).items()}
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
            else:  # causal: logits for one position only (full ones would be b × t × vocab)
                res = self.model(**enc, output_hidden_states=True,
                                 **(self._keep(1) if self.architecture == "causal" else {}))
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

    @torch.no_grad()
    def classify(self, task: data_mod.TaskData) -> list[int]:
        """The predicted label index per eval row."""
        if self.architecture in ("causal", "seq2seq"):
            return self.label_scores(task).argmax(-1).tolist()
        if "classifier.weight" not in self._head:
            raise LoadError(f"task {task.name!r}: the adapter has no saved classification head "
                            "(modules_to_save=['classifier']); an encoder needs one per task")
        w, b = self._head["classifier.weight"], self._head.get("classifier.bias")
        preds = []
        for enc in self._batches([task.prompt(r) for r in task.eval_rows]):
            res = self.model(**enc)
            pooled = res.pooler_output if getattr(res, "pooler_output", None) is not None \
                else res.last_hidden_state[:, 0]
            logits = pooled.float() @ w.T + (b if b is not None else 0)
            preds += logits.argmax(-1).tolist()
        return preds

    @torch.no_grad()
    def label_scores(self, task: data_mod.TaskData) -> torch.Tensor:
        """(rows, labels): Σ log p of each label's tokens given the row's prompt; the prediction
        is the label with the highest total log-likelihood."""
        if self.architecture == "seq2seq":
            return self._label_scores_seq2seq(task)
        return self._label_scores_causal(task)

    def _label_scores_causal(self, task: data_mod.TaskData) -> torch.Tensor:
        """Causal LMs.

        A label's tokens are those that tokenizing ``prompt + " " + label`` adds after the prompt's
        own tokens (lm-evaluation-harness's convention). Each prompt runs once: rows are batched,
        left-padded with explicit position ids (each row computed as if alone), and the prompt's
        key/value cache is then repeated once per label, so only the label tokens are computed per
        label. Logits are asked for only where they are used (``logits_to_keep``): with a 150k-token
        vocabulary, full logits of a 32 × 256 batch would be ~5 GB in float32."""
        labels = task.spec.labels
        prompts = [task.prompt(r) for r in task.eval_rows]
        prompt_ids = self.tokenizer(prompts)["input_ids"]
        whole = self.tokenizer([p + " " + lab for p in prompts for lab in labels])["input_ids"]
        cont = [ids[len(prompt_ids[i // len(labels)]):] for i, ids in enumerate(whole)]
        rows = max(1, self.batch_size // len(labels))  # ≤ batch_size label sequences per forward
        scores = [self._label_logprob(prompt_ids[i:i + rows], cont[i * len(labels):(i + rows) * len(labels)])
                  for i in range(0, len(prompts), rows)]
        return torch.cat(scores).view(len(prompts), len(labels))

    def _label_logprob(self, prompts: list[list[int]], cont: list[list[int]]) -> torch.Tensor:
        """Σ log p(label tokens | prompt) for every (prompt, label): ``cont`` holds each prompt's
        label continuations in order, len(cont) = len(prompts) × n_labels."""
        n_lab = len(cont) // len(prompts)
        pad = self.tokenizer.pad_token_id
        t = max(map(len, prompts))
        ids = torch.tensor([[pad] * (t - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (t - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        c_max = max(map(len, cont))
        if c_max == 0:
            return torch.zeros(len(cont))
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         use_cache=c_max > 1, **self._keep(1))  # single-token labels need no cache
        first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(n_lab, 0)  # predicts token 1
        lab = torch.tensor([c + [pad] * (c_max - len(c)) for c in cont], device=self.device)
        lab_mask = torch.tensor([[1] * len(c) + [0] * (c_max - len(c)) for c in cont], device=self.device)
        scores = torch.where(lab_mask[:, 0] == 1, first.gather(-1, lab[:, :1])[:, 0], 0.0)
        if c_max > 1:  # label tokens 1..c-1, after the shared prompt, predict tokens 2..c
            cache = out.past_key_values
            cache.batch_repeat_interleave(n_lab)
            mask_rep = mask.repeat_interleave(n_lab, 0)
            positions = mask_rep.sum(-1, keepdim=True) + torch.arange(c_max - 1, device=self.device)
            rest = self.model(input_ids=lab[:, :-1], past_key_values=cache, position_ids=positions,
                              attention_mask=torch.cat([mask_rep, lab_mask[:, :-1]], -1)).logits
            lp = torch.log_softmax(rest.float(), -1).gather(-1, lab[:, 1:, None])[..., 0]
            # where(), not a product: a padded position's logits may be NaN, and NaN·0 is NaN
            scores = scores + torch.where(lab_mask[:, 1:] == 1, lp, 0.0).sum(-1)
        return scores.cpu()

    def _keep(self, n: int) -> dict:
        return {"logits_to_keep": n} if "logits_to_keep" in self._forward_args else {}

    def _label_scores_seq2seq(self, task: data_mod.TaskData) -> torch.Tensor:
        """Seq2seq: each label's tokens as the target sequence; the encoder runs once per batch."""
        labels = task.spec.labels
        lab = self.tokenizer(labels, return_tensors="pt", padding=True)
        lab_ids = lab["input_ids"].to(self.device)
        lab_mask = lab["attention_mask"].to(self.device)
        out = []
        for enc in self._batches([task.prompt(r) for r in task.eval_rows]):
            b = enc["input_ids"].shape[0]
            encoded = self.model.get_encoder()(**enc)
            scores = []
            for i in range(len(labels)):
                ids = lab_ids[i:i + 1].expand(b, -1)
                logits = self.model(encoder_outputs=encoded, attention_mask=enc["attention_mask"],
                                    labels=ids.masked_fill(lab_mask[i:i + 1] == 0, -100)).logits
                logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
                scores.append(torch.where(lab_mask[i:i + 1] == 1, logp, 0.0).sum(-1))
            out.append(torch.stack(scores, -1))
        return torch.cat(out).cpu()

    @torch.no_grad()
    def generate(self, task: data_mod.TaskData, max_new_tokens: int | None = None) -> list[str]:
        """Greedy generation, ``batch_size`` rows at a time (decoder-only models left-padded, so
        every row's new tokens start at the same position; `generate` derives position ids from
        the attention mask)."""
        prompts = [task.prompt(r) for r in task.eval_rows]
        side = "right" if self.architecture == "seq2seq" else "left"
        outs = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self.tokenizer(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 padding_side=side).to(self.device)
            gen = self.model.generate(**enc, max_new_tokens=max_new_tokens or task.spec.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            start = 0 if self.architecture == "seq2seq" else enc["input_ids"].shape[1]
            outs += self.tokenizer.batch_decode(gen[:, start:], skip_special_tokens=True)
        return outs

    def evaluate(self, task: data_mod.TaskData) -> float:
        """Score of the current model on ``task`` with the task's metric (0–100)."""
        if task.spec.metric == "rougeL":
            from rouge_score import rouge_scorer

            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            preds = self.generate(task)
            # several references (Super-NaturalInstructions): the best match counts, as in its scorer
            refs = [data_mod.references(r[task.spec.target_field]) for r in task.eval_rows]
            return 100.0 * sum(max(scorer.score(ref, p)["rougeL"].fmeasure for ref in rs)
                               for rs, p in zip(refs, preds)) / len(refs)
        preds = self.classify(task)
        refs = [task.label_index(r) for r in task.eval_rows]
        metric = _metric(task.spec.metric)
        return 100.0 * metric.compute(predictions=preds, references=refs)[task.spec.metric]
