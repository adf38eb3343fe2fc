"""Build the first LLM study's task files (``data/llm13/tasks``) from text that package registries ship.

Eight classification tasks are the demo's own (the same WordNet / VADER / fortune rows, built with
the same seeds), scored by label log-likelihood under instruction-style prompts in
``data/llm13/study.yaml``. Five generation tasks, scored by rougeL like Lots-of-LoRAs, come from
WordNet 3.0 (Debian ``wordnet-base``): define a word, give its opposite, its hypernym, its
irregular plural, the base form of an irregular verb form. Each generation row keeps every
reference WordNet gives (a list; rougeL takes the best match). Words are common ones (WordNet's
SemCor tag count ≥ 1), so a 135M-parameter model has a chance. Rows are split train / eval / probe with a fixed seed.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from .demo_tasks import SOURCES as DEMO_SOURCES
from .demo_tasks import WORDNET, SourceMissing, _wordnet, fortune_tasks, vader_tasks, wordnet_tasks

CLASSIFICATION = [
    "wn_pos",
    "wn_noun_topic",
    "wn_verb_topic",
    "wn_antonym",
    "wn_hypernym",
    "vader_polarity",
    "vader_intensity",
    "fortune_topic",
]
GEN_SPLITS = {"train": 320, "eval": 100, "probe": 10}


def _tagged(pos_file: str) -> dict[str, int]:
    """lemma → SemCor tag count (how often its senses were seen in running text)."""
    out = {}
    for line in (WORDNET / f"index.{pos_file}").read_text(errors="replace").splitlines():
        if line.startswith(" "):
            continue
        f = line.split()
        p_cnt = int(f[3])
        out[f[0]] = int(f[5 + p_cnt])
    return out


def _split(items: list[dict], rng: random.Random) -> list[dict]:
    rng.shuffle(items)
    rows, i = [], 0
    for split, n in GEN_SPLITS.items():
        rows += [{**it, "split": split} for it in items[i : i + n]]
        i += n
    if i > len(items):
        raise SourceMissing(f"only {len(items)} rows for a task that needs {i}")
    return rows


def generation_tasks(rng: random.Random) -> dict[str, tuple[list[dict], str]]:
    syn = _wordnet()
    common = {
        p: {w for w, n in _tagged(f).items() if n >= 1 and w.isalpha()}
        for p, f in (("n", "noun"), ("v", "verb"), ("a", "adj"))
    }
    by_word: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (pos, _), e in syn.items():
        for w in e["words"]:
            by_word[(pos, w.lower())].append(e)

    definitions = []
    for (pos, word), entries in sorted(by_word.items()):
        if pos in common and word in common[pos]:
            glosses = sorted({e["gloss"] for e in entries if 10 <= len(e["gloss"]) <= 90})
            if glosses:
                definitions.append({"word": word, "target": glosses})
    opposites = []
    for (pos, word), entries in sorted(by_word.items()):
        if pos != "a" or word not in common["a"]:
            continue
        ants = set()
        for e in entries:
            idx = [i for i, w in enumerate(e["words"]) if w.lower() == word]
            for sym, off, p, st in e["ptrs"]:
                other = syn.get((p if p != "s" else "a", off))
                src, tgt = int(st[:2], 16), int(st[2:], 16)
                if sym == "!" and other and (src - 1) in idx and 0 < tgt <= len(other["words"]):
                    ants.add(other["words"][tgt - 1].lower())
        if ants:
            opposites.append({"word": word, "target": sorted(ants)})
    hypernyms = []
    for (pos, word), entries in sorted(by_word.items()):
        if pos != "n" or word not in common["n"]:
            continue
        first = entries[0]
        heads = [syn.get(("n", off)) for sym, off, p, _ in first["ptrs"] if sym == "@" and p == "n"]
        names = sorted({w.lower() for h in heads if h for w in h["words"] if w.isalpha()})
        if names:
            hypernyms.append({"word": word, "target": names})
    plurals = defaultdict(set)
    for line in (WORDNET / "noun.exc").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isalpha() and parts[1].isalpha():
            plurals[parts[1]].add(parts[0])
    plural_rows = [{"word": w, "target": sorted(p)} for w, p in sorted(plurals.items())]
    lemmas = defaultdict(set)
    for line in (WORDNET / "verb.exc").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and all(p.isalpha() for p in parts[:2]):
            lemmas[parts[0]].add(parts[1])
    verb_rows = [{"word": w, "target": sorted(b)} for w, b in sorted(lemmas.items())]
    return {
        "wn_define": (_split(definitions, rng), "word → its WordNet definition (any sense)"),
        "wn_opposite": (_split(opposites, rng), "adjective → its WordNet antonym(s)"),
        "wn_kind_of": (_split(hypernyms, rng), "noun → the hypernym of its first sense"),
        "wn_plural": (_split(plural_rows, rng), "noun → its irregular plural (WordNet noun.exc)"),
        "wn_verb_base": (_split(verb_rows, rng), "irregular verb form → its base form (WordNet verb.exc)"),
    }


def build(out_dir: Path, seed: int = 0) -> dict[str, dict]:
    """Write every task's jsonl and PROVENANCE.md; returns what was made."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    sources = [
        ("wordnet", wordnet_tasks),
        ("vader", vader_tasks),
        ("fortunes", fortune_tasks),
        ("wordnet-generation", generation_tasks),
    ]
    for source, fn in sources:
        for name, (rows, description) in fn(random.Random(f"{seed}:{source}")).items():
            if source != "wordnet-generation" and name not in CLASSIFICATION:
                continue
            (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            counts = {s: sum(r["split"] == s for r in rows) for s in GEN_SPLITS}
            made[name] = {
                "source": source.split("-")[0],
                "description": description,
                "rows": counts,
                "kind": "generation" if source == "wordnet-generation" else "classification",
            }
    lines = [
        "# LLM study tasks: provenance and licences",
        "",
        "Built by `mergelab demo build-llm-data` (seed 0) from text that Debian and PyPI packages ship.",
        "Classification rows are the demo's (same builder, same seeds); generation rows keep every",
        "reference WordNet gives, and rougeL scores the best-matching one.",
        "",
        "| task | kind | what | train / eval / probe | source |",
        "|---|---|---|---|---|",
    ]
    for name, m in made.items():
        r = m["rows"]
        lines.append(
            f"| {name} | {m['kind']} | {m['description']} | {r['train']} / {r['eval']} / {r['probe']} | "
            f"{DEMO_SOURCES[m['source']]} |"
        )
    (out_dir / "PROVENANCE.md").write_text("\n".join(lines) + "\n")
    (out_dir / "tasks.json").write_text(json.dumps(made, indent=2))
    return made
