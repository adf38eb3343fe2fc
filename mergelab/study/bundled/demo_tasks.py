"""Build the demo's task files from text that package registries ship (no hub, no network).

Sources: Debian ``wordnet-base`` (WordNet 3.0, Princeton licence), Debian ``fortunes`` +
``fortunes-min`` (BSD fortune files), the VADER lexicon inside the PyPI package
``vaderSentiment`` (MIT), and a few programmatic tasks. Every task is written as
``data/demo/tasks/<task>.jsonl`` with ``text``, ``label`` and ``split`` (train / eval / probe),
labels balanced in every split, and ``data/demo/tasks/PROVENANCE.md`` says where each came from.
The files are committed: nobody needs apt to run the demo.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
SPLITS = {"train": 320, "eval": 100, "probe": 10}  # rows per task and split
LEXNAMES = {
    5: "animal",
    6: "artifact",
    13: "food",
    15: "location",
    18: "person",
    20: "plant",
    32: "communication",
    34: "consumption",
    35: "contact",
    37: "emotion",
    38: "motion",
    31: "cognition",
}
POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


class SourceMissing(RuntimeError):
    pass


def _wordnet():
    if not (WORDNET / "data.noun").exists():
        raise SourceMissing("WordNet not found in /usr/share/wordnet: apt-get install wordnet-base")
    synsets = {}
    for pos_file in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos_file}").read_text(errors="replace").splitlines():
            if line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            offset, lexfile, ss_type, w_cnt = f[0], int(f[1]), f[2], int(f[3], 16)
            words = [re.sub(r"\(\w+\)$", "", f[4 + 2 * i]).replace("_", " ") for i in range(w_cnt)]
            p = 4 + 2 * w_cnt
            p_cnt = int(f[p])
            ptrs = [(f[p + 1 + 4 * i], f[p + 2 + 4 * i], f[p + 3 + 4 * i], f[p + 4 + 4 * i]) for i in range(p_cnt)]
            definition = gloss.split(";")[0].strip().strip('"').strip()
            synsets[(ss_type if ss_type != "s" else "a", offset)] = {
                "lexfile": lexfile,
                "pos": ss_type,
                "words": words,
                "ptrs": ptrs,
                "gloss": definition,
            }
    return synsets


def _clean_gloss(entry) -> str:
    text = entry["gloss"]
    for w in entry["words"]:
        text = re.sub(rf"\b{re.escape(w)}\b", "it", text, flags=re.I)
    return text


def _balanced(pools: dict[str, list[str]], rng: random.Random, per_label: int | None = None):
    """Rows with an equal number of texts per label, split into train / eval / probe."""
    labels = sorted(pools)
    total = sum(SPLITS.values())
    n = per_label or -(-total // len(labels))
    n = min(n, *(len(set(p)) for p in pools.values()))
    rows = []
    counts = {s: -(-c // len(labels)) for s, c in SPLITS.items()}
    for label in labels:
        texts = sorted(set(pools[label]))
        rng.shuffle(texts)
        texts = texts[:n]
        i = 0
        for split, c in counts.items():
            take = texts[i : i + c]
            i += c
            rows += [{"text": t, "label": label, "split": split} for t in take]
    rng.shuffle(rows)
    return rows


def wordnet_tasks(rng: random.Random) -> dict[str, tuple[list[dict], str]]:
    syn = _wordnet()
    out = {}
    pos_pools = defaultdict(list)
    for (_, _), e in syn.items():
        if len(e["gloss"]) > 12:
            pos_pools[POS[e["pos"]]].append(_clean_gloss(e))
    out["wn_pos"] = (_balanced(pos_pools, rng), "WordNet gloss → part of speech of the word it defines")
    noun_pools, verb_pools = defaultdict(list), defaultdict(list)
    for e in syn.values():
        name = LEXNAMES.get(e["lexfile"])
        if name and e["pos"] == "n":
            noun_pools[name].append(_clean_gloss(e))
        elif name and e["pos"] == "v":
            verb_pools[name].append(_clean_gloss(e))
    out["wn_noun_topic"] = (
        _balanced(noun_pools, rng),
        "noun gloss → WordNet lexicographer file (animal, artifact, food, location, person, plant)",
    )
    out["wn_verb_topic"] = (
        _balanced(verb_pools, rng),
        "verb gloss → WordNet lexicographer file (cognition, communication, consumption, contact, emotion, motion)",
    )
    antonyms, synonyms = [], []
    for key, e in syn.items():
        if key[0] != "a":
            continue
        single = [w for w in e["words"] if " " not in w]
        if len(single) >= 2:
            synonyms.append(f"{single[0]} / {single[1]}")
        for sym, off, pos, st in e["ptrs"]:
            if sym == "!" and (pos if pos != "s" else "a", off) in syn:
                src, tgt = int(st[:2], 16), int(st[2:], 16)
                other = syn[(pos if pos != "s" else "a", off)]
                if 0 < src <= len(e["words"]) and 0 < tgt <= len(other["words"]):
                    antonyms.append(f"{e['words'][src - 1]} / {other['words'][tgt - 1]}")
    out["wn_antonym"] = (
        _balanced({"antonyms": antonyms, "synonyms": synonyms}, rng),
        "adjective pair → antonyms (WordNet '!' pointer) or synonyms (same synset)",
    )
    nouns = [(k, e) for k, e in syn.items() if k[0] == "n" and " " not in e["words"][0]]
    heads = [e["words"][0] for _, e in nouns]
    true_pairs, false_pairs = [], []
    for _, e in nouns:
        hyper = [syn.get(("n", off)) for sym, off, pos, _ in e["ptrs"] if sym == "@" and pos == "n"]
        hyper = [h for h in hyper if h and " " not in h["words"][0]]
        if hyper:
            true_pairs.append(f"a {e['words'][0]} is a kind of {hyper[0]['words'][0]}")
            false_pairs.append(f"a {e['words'][0]} is a kind of {rng.choice(heads)}")
    out["wn_hypernym"] = (
        _balanced({"true": true_pairs, "false": false_pairs}, rng),
        "'a X is a kind of Y' → true (WordNet hypernym) or false (random noun)",
    )
    return out


def vader_tasks(rng: random.Random) -> dict[str, tuple[list[dict], str]]:
    try:
        import vaderSentiment
    except ImportError:
        raise SourceMissing("pip install vaderSentiment==3.3.2 (its lexicon is the source)") from None
    lex = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    scores = {}
    for line in lex.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha():
            scores[parts[0]] = float(parts[1])
    pos = [w for w, s in scores.items() if s >= 1.0]
    neg = [w for w, s in scores.items() if s <= -1.0]
    strong = [w for w, s in scores.items() if abs(s) >= 2.2]
    mild = [w for w, s in scores.items() if 0.4 <= abs(s) <= 1.2]
    return {
        "vader_polarity": (
            _balanced({"positive": pos, "negative": neg}, rng),
            "word → sign of its VADER valence (|valence| ≥ 1)",
        ),
        "vader_intensity": (
            _balanced({"strong": strong, "mild": mild}, rng),
            "word → strong (|valence| ≥ 2.2) or mild (0.4–1.2) VADER valence",
        ),
    }


def fortune_tasks(rng: random.Random) -> dict[str, tuple[list[dict], str]]:
    cats = ["computers", "science", "politics", "wisdom"]
    pools = {}
    for c in cats:
        path = FORTUNES / c
        if not path.exists():
            raise SourceMissing("fortune files not found: apt-get install fortunes fortunes-min")
        entries = [" ".join(e.split()) for e in path.read_text(errors="replace").split("\n%\n")]
        pools[c] = [e for e in entries if 20 <= len(e) <= 240]
    return {"fortune_topic": (_balanced(pools, rng), "quote → its fortune file (computers, science, politics, wisdom)")}


def programmatic_tasks(rng: random.Random) -> dict[str, tuple[list[dict], str]]:
    words = (
        [w for w in (WORDNET / "index.noun").read_text().split() if w.isalpha() and w.islower()]
        if (WORDNET / "index.noun").exists()
        else []
    )
    if not words:
        raise SourceMissing("WordNet not found: apt-get install wordnet-base")
    nums = [str(rng.randrange(10, 100000)) for _ in range(4000)]
    pairs = [(rng.randrange(1, 1000), rng.randrange(1, 1000)) for _ in range(4000)]
    return {
        "num_parity": (
            _balanced({"even": [n for n in nums if int(n) % 2 == 0], "odd": [n for n in nums if int(n) % 2]}, rng),
            "a number written in digits → even or odd (programmatic)",
        ),
        "num_compare": (
            _balanced(
                {
                    "first": [f"{a} vs {b}" for a, b in pairs if a > b],
                    "second": [f"{a} vs {b}" for a, b in pairs if a < b],
                },
                rng,
            ),
            "'a vs b' → which number is larger (programmatic)",
        ),
        "vowel_start": (
            _balanced(
                {
                    "vowel": [w for w in words if w[0] in "aeiou"],
                    "consonant": [w for w in words if w[0] not in "aeiou"],
                },
                rng,
            ),
            "WordNet noun → starts with a vowel or a consonant (programmatic)",
        ),
        "word_length": (
            _balanced({"short": [w for w in words if len(w) <= 4], "long": [w for w in words if len(w) >= 10]}, rng),
            "WordNet noun → short (≤ 4 letters) or long (≥ 10) (programmatic)",
        ),
    }


SOURCES = {
    "wordnet": (
        "Debian wordnet-base 1:3.0 (WordNet 3.0, © 2006 Princeton University; WordNet "
        "licence: use, copy, modify, distribute with notice)"
    ),
    "vader": ("vader_lexicon.txt in PyPI vaderSentiment 3.3.2 (Hutto & Gilbert 2014; MIT licence)"),
    "fortunes": (
        "Debian fortunes / fortunes-min (BSD fortune files; public domain / BSD licence "
        "as per /usr/share/doc/fortunes/copyright)"
    ),
    "programmatic": "generated by mergelab.demo.build_data with a fixed seed (no licence needed)",
}


def build(out_dir: Path, seed: int = 0) -> dict[str, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for source, fn in [
        ("wordnet", wordnet_tasks),
        ("vader", vader_tasks),
        ("fortunes", fortune_tasks),
        ("programmatic", programmatic_tasks),
    ]:
        for name, (rows, description) in fn(random.Random(f"{seed}:{source}")).items():
            (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            labels = sorted({r["label"] for r in rows})
            counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
            made[name] = {"source": source, "description": description, "labels": labels, "rows": counts}
    lines = [
        "# Demo tasks: provenance and licences",
        "",
        "Built by `mergelab demo build-data` (seed 0). Labels are balanced in every split.",
        "",
        "| task | what | labels | train / eval / probe | source |",
        "|---|---|---|---|---|",
    ]
    for name, m in made.items():
        r = m["rows"]
        lines.append(
            f"| {name} | {m['description']} | {', '.join(m['labels'])} | "
            f"{r['train']} / {r['eval']} / {r['probe']} | {SOURCES[m['source']]} |"
        )
    (out_dir / "PROVENANCE.md").write_text("\n".join(lines) + "\n")
    (out_dir / "tasks.json").write_text(json.dumps(made, indent=2))
    return made
