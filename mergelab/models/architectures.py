"""One scorer per architecture: how a loaded model classifies, scores labels, generates and
exposes hidden states. Encoders classify with each task's own head; causal LMs and seq2seq models
score each label's log-likelihood and generate greedily."""

from __future__ import annotations

import torch

from ..io.errors import LoadError


class Scorer:
    """Shared by every architecture; ``m`` is the :class:`~mergelab.models.loaded.LoadedModel`."""

    padding_side = "right"

    def __init__(self, m):
        self.m = m

    def check(self) -> None:
        """Raise LoadError if the loaded model cannot be scored this way."""

    def hidden_forward(self, enc: dict):
        return self.m.model(**enc, output_hidden_states=True)

    def classify(self, task) -> list[int]:
        """The predicted label index per eval row: the label with the highest log-likelihood."""
        return self.label_scores(task).argmax(-1).tolist()

    def label_scores(self, task) -> torch.Tensor:
        raise LoadError(f"a {self.m.architecture} model does not score labels")

    @torch.no_grad()
    def generate(self, task, max_new_tokens: int | None = None) -> list[str]:
        """Greedy generation, ``batch_size`` rows at a time (decoder-only models left-padded, so
        every row's new tokens start at the same position; `generate` derives position ids from
        the attention mask)."""
        m = self.m
        prompts = [task.prompt(r) for r in task.eval_rows]
        outs = []
        for i in range(0, len(prompts), m.batch_size):
            enc = m.tokenizer(
                prompts[i : i + m.batch_size], return_tensors="pt", padding=True, padding_side=self.padding_side
            ).to(m.device)
            gen = m.model.generate(
                **enc,
                max_new_tokens=max_new_tokens or task.spec.max_new_tokens,
                do_sample=False,
                pad_token_id=m.tokenizer.pad_token_id,
            )
            outs += m.tokenizer.batch_decode(gen[:, self._new_tokens_start(enc) :], skip_special_tokens=True)
        return outs

    def _new_tokens_start(self, enc: dict) -> int:
        return 0


class EncoderScorer(Scorer):
    """Encoders (BERT, MiniLM): each task is scored with its own classification head, never merged."""

    @torch.no_grad()
    def label_scores(self, task) -> torch.Tensor:
        """(rows, labels): log-softmax of the task's own head on the pooled state of each row."""
        m = self.m
        if "classifier.weight" not in m.head:
            raise LoadError(
                f"task {task.name!r}: the adapter has no saved classification head "
                "(modules_to_save=['classifier']); an encoder needs one per task"
            )
        w, b = m.head["classifier.weight"], m.head.get("classifier.bias")
        out = []
        for enc in m.batches([task.prompt(r) for r in task.eval_rows]):
            res = m.model(**enc)
            pooled = (
                res.pooler_output if getattr(res, "pooler_output", None) is not None else res.last_hidden_state[:, 0]
            )
            logits = pooled.float() @ w.T + (b if b is not None else 0)
            out.append(torch.log_softmax(logits, -1).cpu())
        return torch.cat(out)

    def generate(self, task, max_new_tokens: int | None = None) -> list[str]:
        raise LoadError(
            f"task {task.name!r}: an encoder cannot generate text (rougeL tasks need a causal or seq2seq base)"
        )


class CausalScorer(Scorer):
    """Decoder-only LMs: label log-likelihood with a shared prompt cache; left-padded generation."""

    padding_side = "left"

    def check(self) -> None:
        if "position_ids" not in self.m.forward_args:
            raise LoadError(
                f"{type(self.m.model).__name__} takes no position_ids; label scoring pads on the "
                "left and needs them to compute each sequence as if alone"
            )

    def hidden_forward(self, enc: dict):  # logits for one position only (full ones would be b × t × vocab)
        return self.m.model(**enc, output_hidden_states=True, **self._keep(1))

    def _keep(self, n: int) -> dict:
        return {"logits_to_keep": n} if "logits_to_keep" in self.m.forward_args else {}

    def _new_tokens_start(self, enc: dict) -> int:
        return enc["input_ids"].shape[1]

    @torch.no_grad()
    def label_scores(self, task) -> torch.Tensor:
        """(rows, labels): Σ log p of each label's tokens given the row's prompt.

        A label's tokens are those that tokenizing ``prompt + " " + label`` adds after the prompt's
        own tokens (lm-evaluation-harness's convention). Each prompt runs once: rows are batched,
        left-padded with explicit position ids (each row computed as if alone), and the prompt's
        key/value cache is then repeated once per label, so only the label tokens are computed per
        label. Logits are asked for only where they are used (``logits_to_keep``): with a 150k-token
        vocabulary, full logits of a 32 × 256 batch would be ~5 GB in float32."""
        labels = task.spec.labels
        prompts = [task.prompt(r) for r in task.eval_rows]
        prompt_ids = self.m.tokenizer(prompts)["input_ids"]
        whole = self.m.tokenizer([p + " " + lab for p in prompts for lab in labels])["input_ids"]
        cont = [ids[len(prompt_ids[i // len(labels)]) :] for i, ids in enumerate(whole)]
        rows = max(1, self.m.batch_size // len(labels))  # ≤ batch_size label sequences per forward
        scores = [
            self._label_logprob(prompt_ids[i : i + rows], cont[i * len(labels) : (i + rows) * len(labels)])
            for i in range(0, len(prompts), rows)
        ]
        return torch.cat(scores).view(len(prompts), len(labels))

    def _label_logprob(self, prompts: list[list[int]], cont: list[list[int]]) -> torch.Tensor:
        """Σ log p(label tokens | prompt) for every (prompt, label): ``cont`` holds each prompt's
        label continuations in order, len(cont) = len(prompts) × n_labels."""
        n_lab = len(cont) // len(prompts)
        pad = self.m.tokenizer.pad_token_id
        t = max(map(len, prompts))
        ids = torch.tensor([[pad] * (t - len(p)) + p for p in prompts], device=self.m.device)
        mask = torch.tensor([[0] * (t - len(p)) + [1] * len(p) for p in prompts], device=self.m.device)
        c_max = max(map(len, cont))
        if c_max == 0:
            return torch.zeros(len(cont))
        out = self.m.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=c_max > 1,
            **self._keep(1),
        )  # single-token labels need no cache
        first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(n_lab, 0)  # predicts token 1
        lab = torch.tensor([c + [pad] * (c_max - len(c)) for c in cont], device=self.m.device)
        lab_mask = torch.tensor([[1] * len(c) + [0] * (c_max - len(c)) for c in cont], device=self.m.device)
        scores = torch.where(lab_mask[:, 0] == 1, first.gather(-1, lab[:, :1])[:, 0], 0.0)
        if c_max > 1:  # label tokens 1..c-1, after the shared prompt, predict tokens 2..c
            cache = out.past_key_values
            cache.batch_repeat_interleave(n_lab)
            mask_rep = mask.repeat_interleave(n_lab, 0)
            positions = mask_rep.sum(-1, keepdim=True) + torch.arange(c_max - 1, device=self.m.device)
            rest = self.m.model(
                input_ids=lab[:, :-1],
                past_key_values=cache,
                position_ids=positions,
                attention_mask=torch.cat([mask_rep, lab_mask[:, :-1]], -1),
            ).logits
            lp = torch.log_softmax(rest.float(), -1).gather(-1, lab[:, 1:, None])[..., 0]
            # where(), not a product: a padded position's logits may be NaN, and NaN·0 is NaN
            scores = scores + torch.where(lab_mask[:, 1:] == 1, lp, 0.0).sum(-1)
        return scores.cpu()


class Seq2SeqScorer(Scorer):
    """Encoder-decoder models (T5): label tokens as the target sequence; the encoder's states."""

    def hidden_forward(self, enc: dict):  # the encoder's states: what the input became
        return self.m.model.get_encoder()(**enc, output_hidden_states=True)

    @torch.no_grad()
    def label_scores(self, task) -> torch.Tensor:
        """Seq2seq: each label's tokens as the target sequence; the encoder runs once per batch."""
        labels = task.spec.labels
        lab = self.m.tokenizer(labels, return_tensors="pt", padding=True)
        lab_ids = lab["input_ids"].to(self.m.device)
        lab_mask = lab["attention_mask"].to(self.m.device)
        out = []
        for enc in self.m.batches([task.prompt(r) for r in task.eval_rows]):
            b = enc["input_ids"].shape[0]
            encoded = self.m.model.get_encoder()(**enc)
            scores = []
            for i in range(len(labels)):
                ids = lab_ids[i : i + 1].expand(b, -1)
                logits = self.m.model(
                    encoder_outputs=encoded,
                    attention_mask=enc["attention_mask"],
                    labels=ids.masked_fill(lab_mask[i : i + 1] == 0, -100),
                ).logits
                logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
                scores.append(torch.where(lab_mask[i : i + 1] == 1, logp, 0.0).sum(-1))
            out.append(torch.stack(scores, -1))
        return torch.cat(out).cpu()


SCORERS = {"encoder": EncoderScorer, "causal": CausalScorer, "seq2seq": Seq2SeqScorer}
