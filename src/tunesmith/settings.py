"""Settings of the commands that use a run — generate, chat, serve, compare, export: typed, frozen,
a docstring per field; every default lives here (a run's own config is in config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from .errors import ConfigError, require

ExportFormat = Literal["adapter", "merged", "gguf"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
DEFAULT_EXPORT_FORMAT: ExportFormat = "merged"  # what transformers, vLLM and llama.cpp's converter all load
GgufType = Literal["f32", "f16", "q8_0"]
GGUF_TYPES: tuple[str, ...] = get_args(GgufType)
DEFAULT_GGUF_TYPE: GgufType = "f16"  # half of f32's size; its logits within 7.2e-4 relative RMS on SmolLM2-135M
MERGE_TOLERANCE = 1e-3
"""Largest accepted |Δ logit| / (1 + |logit|) of a merged export against base + adapter. Float32
rounding alone gives ~1.3e-4 on SmolLM2-135M (30 layers) and ~3e-6 on the 2-layer test model; a
merge that drops or mis-scales an adapter is off by far more than 1e-3."""


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens when answering (generate, chat, serve)."""

    max_new_tokens: int = 256
    """Most tokens in one answer."""
    temperature: float = 0.0
    """0 is greedy (reproducible); above 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling mass, used when temperature > 0."""
    seed: int | None = None
    """Seeds sampling for a reproducible sampled answer."""
    stop: tuple[str, ...] = ()
    """Extra strings that end the answer; they are not included in it."""
    repetition_penalty: float = 1.0
    """Divides the score of every token already in the prompt or the answer (CTRL's penalty, as in
    transformers' generate); 1.0 is off. 1.1-1.3 stops a model that repeats one phrase to the limit."""
    no_repeat_ngram_size: int = 0
    """Never repeat an n-gram of this many tokens within the answer and prompt; 0 is off."""

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be at least 1, got {self.max_new_tokens}")
        require(self.repetition_penalty > 0, "repetition_penalty", f"must be positive, got {self.repetition_penalty}")
        require(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
               f"must be 0 (off) or a token count, got {self.no_repeat_ngram_size}")

    def generate_kwargs(self) -> dict[str, Any]:
        """transformers' generate() arguments for picking tokens (greedy unless temperature > 0)."""
        picked: dict[str, Any] = ({"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
                                  if self.temperature > 0 else {"do_sample": False})
        if self.repetition_penalty != 1.0:
            picked["repetition_penalty"] = self.repetition_penalty
        if self.no_repeat_ngram_size:
            picked["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return picked


RetrieverKind = Literal["dense", "bm25", "hybrid"]
RETRIEVERS: tuple[str, ...] = get_args(RetrieverKind)
UnreadablePolicy = Literal["refuse", "skip"]
UNREADABLE_POLICIES: tuple[str, ...] = get_args(UnreadablePolicy)


@dataclass(frozen=True)
class RetrievalSettings:
    """How the knowledge source is cut, searched and put into prompts (`--knowledge`)."""

    top_k: int = 3
    """Passages retrieved per question; FAQ answers are ~60 words, so 3 fit easily and the right
    one is usually among them."""
    chunk_words: int = 120
    """Words per passage: ~160 MiniLM tokens, under its 256-token input limit."""
    overlap_words: int = 30
    """Words shared by consecutive passages of a long document, so a fact cut at an edge is whole in one."""
    max_prompt_tokens: int = 1024
    """Largest prompt (template, passages and question) in the model's tokens; passages that do not
    fit are cut or dropped. Prefill cost on a CPU grows with it; the model's context also caps it."""
    min_passage_tokens: int = 16
    """A passage cut to fewer tokens than this is dropped instead: a fragment helps less than it costs."""
    retriever: RetrieverKind = "dense"
    """How passages are found: `dense` (MiniLM embeddings, cosine), `bm25` (words in common, weighted
    by rarity) or `hybrid` (both rankings fused by reciprocal rank). Dense is the default because it
    found the most answers on the FAQ: recall@1/3/5 0.56/0.74/0.81 against hybrid's 0.52/0.68/0.73
    and bm25's 0.36/0.57/0.64 (docs/compare.md); on the questions with jargon (bygglov, ROT, BBR)
    hybrid is level at k = 1 and behind at 3 and 5. FAQ answers share under half of their question's
    words, which is what BM25 scores; documents that share more (manuals, rules) may favour hybrid."""
    rrf_k: int = 60
    """Reciprocal rank fusion's constant: a passage scores the sum of 1 / (rrf_k + rank) over the
    rankings it is in, so a passage near the top of both beats one at the top of one. 60 is Cormack,
    Clarke and Büttcher's value (SIGIR 2009), which they found to work across collections."""
    unreadable_documents: UnreadablePolicy = "refuse"
    """A knowledge document that cannot be read whole (corrupt, encrypted, a scan without text):
    `refuse` stops with every such file named; `skip` leaves them out, naming each in the log."""
    handoff: str | None = None
    """The hand-off a run trained with `retrieval:` gives when its passages do not hold the answer;
    with it the prompt asks for it by name (None: a plain retrieval prompt, as for any model)."""
    cite: bool = False
    """Ask the answer to name the numbered passage it used, as `[2]` (a run trained with `cite`)."""
    min_relevance: float | None = None
    """The relevance floor: a prompt gets no passages when the best of its passages has a cosine
    similarity under this with the question (all-MiniLM-L6-v2 embeddings, whatever the retriever), so
    a run trained with `retrieval:` gives its hand-off. None or 0: every retrieved passage goes in."""

    @property
    def uses_embedder(self) -> bool:
        """Whether answering needs the embedding model: dense and hybrid rank with it, a floor measures with it."""
        return self.retriever != "bm25" or bool(self.min_relevance)

    def __post_init__(self) -> None:
        require(self.min_relevance is None or 0.0 <= self.min_relevance <= 1.0, "retrieval.min_relevance",
                f"must be in [0, 1], got {self.min_relevance}")
        require(self.retriever in RETRIEVERS, "retrieval.retriever", f"must be one of {', '.join(RETRIEVERS)}, "
                f"got {self.retriever!r}")
        require(self.unreadable_documents in UNREADABLE_POLICIES, "retrieval.unreadable_documents",
                f"must be one of {', '.join(UNREADABLE_POLICIES)}, got {self.unreadable_documents!r}")
        for key in ("top_k", "chunk_words", "max_prompt_tokens", "min_passage_tokens", "rrf_k"):
            require(getattr(self, key) >= 1, f"retrieval.{key}", f"must be at least 1, got {getattr(self, key)}")
        require(0 <= self.overlap_words < self.chunk_words, "retrieval.overlap_words",
               f"must be in [0, chunk_words), got {self.overlap_words}")


MIN_RELEVANCE_MISS = 0.05
"""Share of the training questions whose passages hold the answer that a measured relevance floor
leaves without passages (so they hand off). On the FAQ (docs/raft.md) a floor at 5% of the training
questions handed off on 6.6% of the held-out questions whose passages held the answer and on 21% of
those whose passages could not (3%: 6.6% and 16%; 10%: 17% and 38%)."""

DEFAULT_HANDOFF = "I can't find that in our documentation; I'll pass your question to a colleague."
"""What a run trained with `retrieval:` says when its passages do not hold the answer, unless the
config gives its own words (`retrieval.handoff`)."""


@dataclass(frozen=True)
class RetrievalTrainConfig:
    """The `retrieval:` section of a run (RAFT): training prompts carry the passages the deployed
    retriever returns, through the prompt builder that compare, chat and serve use (docs/raft.md)."""

    knowledge: str
    """The knowledge source searched, as `--knowledge` of compare, chat and serve: they default to it."""
    retriever: RetrieverKind = RetrievalSettings.retriever
    """How passages are found (dense, bm25, hybrid); the run's later commands answer with it."""
    top_k: int = RetrievalSettings.top_k
    """Passages in every training prompt, and at answer time."""
    gold_share: float | None = None
    """Share of the training examples whose passages include the gold one (the passage holding the
    answer). None takes the retriever's measured recall@top_k on the training questions, so training
    sees the gold passage as often as answering will."""
    handoff_share: float | None = None
    """Share of the training examples whose gold passage is removed and whose answer is the hand-off.
    None: all of the examples without the gold passage (1 - gold_share), so the model learns to answer
    from its passages or hand off; the rest of a smaller share keep their answer (RAFT's memorised share).
    With a measured gold_share it is capped at 1 - gold_share."""
    handoff: str = DEFAULT_HANDOFF
    """The hand-off: the words the model is trained to give when its passages do not hold the answer."""
    cite: bool = True
    """Number the passages and train the answer to end with the one it used (`[2]`), which chat and
    serve turn into the passage's source (`permits.pdf:p12`), so a person can check the answer."""
    min_relevance: float | None = None
    """The relevance floor (RetrievalSettings.min_relevance): where no passage reaches it, the prompt
    has no passages, and the hand-off rows are trained on such prompts. None measures it on the
    training questions: the similarity under which the best passage falls for MIN_RELEVANCE_MISS of
    those whose passages hold the answer. 0 turns it off, and the hand-off rows then carry the best
    passages that do not hold the answer (a 135M model did not learn to tell those apart: docs/raft.md)."""

    def __post_init__(self) -> None:
        require(bool(self.knowledge), "retrieval.knowledge", "is required: the knowledge source to retrieve from")
        require(bool(self.handoff.strip()), "retrieval.handoff", "must not be empty")
        RetrievalSettings(top_k=self.top_k, retriever=self.retriever,  # the same checks as at answer time
                          min_relevance=self.min_relevance)
        for key in ("gold_share", "handoff_share"):
            value = getattr(self, key)
            require(value is None or 0.0 <= value <= 1.0, f"retrieval.{key}", f"must be in [0, 1], got {value}")
        if self.gold_share is not None and self.handoff_share is not None:
            require(self.gold_share + self.handoff_share <= 1.0, "retrieval.handoff_share",
                    f"gold_share + handoff_share must not exceed 1, got {self.gold_share} + {self.handoff_share}")

    def answer_settings(self, base: RetrievalSettings = RetrievalSettings()) -> RetrievalSettings:
        """`base` with this run's retriever, passage count, hand-off and citations: what the run answers with."""
        return replace(base, retriever=self.retriever, top_k=self.top_k, handoff=self.handoff, cite=self.cite,
                       min_relevance=self.min_relevance)


JUDGE_KEY_ENV = "TUNESMITH_JUDGE_API_KEY"
"""Where a score_model judge's key is read from (`grade`, `server`, and training's `grpo.judge_url`):
the environment, never a config, since a run's config.yaml is written out."""
GENERATION_BATCH = 16
"""Prompts decoded together by eval, compare and the probes. A decoding step of a small model is
bound by reading the weights and by per-operation overhead, which a batch shares: eval's 12 demo
answers took 12.3 s in one batch against 60.9 s one at a time, and 10.0-10.2 s in one batch of 12
against 14.7-15.6 s in two of 8 and 4 (the adapter merged, the same tokens)."""


@dataclass(frozen=True)
class CompareSettings:
    """How many questions each system of `tunesmith compare` answers, and how."""

    limit: int = 40
    """Held-out questions answered (a sample drawn with the run's seed). 40 held-out + 20 training
    questions, 4 systems, 96 new tokens: minutes, not hours, for the 135M default on 2 CPU cores."""
    seen: int = 20
    """Training questions answered, for the split 'facts seen in training'; 0 leaves it out."""
    max_new_tokens: int = 96
    """Longest answer; the demo's FAQ answers are 20-80 words."""
    batch_size: int = GENERATION_BATCH
    """Prompts decoded together, as in eval. 16 against 8: compare's 120 prompts (short questions and
    retrieval-length ones, sorted by length) answered in 0.82x the time at one thread (32 of them:
    52.9 s against 64.4 s), the same tokens; 32 was slower again (79.4 s), its padding outweighing
    the shared steps."""
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    """Passages per question, the retriever and the prompt budget of the two +rag systems."""
    recall_ks: tuple[int, ...] = (1, 3, 5)
    """The k of the recall@k reported for the retriever on the held-out questions (does a passage
    holding the reference answer come back among the first k?)."""

    def __post_init__(self) -> None:
        for key in ("limit", "max_new_tokens", "batch_size"):
            require(getattr(self, key) >= 1, f"compare.{key}", f"must be at least 1, got {getattr(self, key)}")
        require(self.seen >= 0, "compare.seen", f"must be non-negative, got {self.seen}")
        require(bool(self.recall_ks) and all(k >= 1 for k in self.recall_ks), "compare.recall_ks",
                f"must be positive passage counts, got {list(self.recall_ks)}")


@dataclass(frozen=True)
class ServeLimits:
    """What `tunesmith serve` accepts; each limit answers a request past it with a 4xx error."""

    max_body_bytes: int = 1_000_000
    """Largest request body (chunked bodies counted while they arrive); larger gets 413."""
    max_tokens: int = 1024
    """Largest `max_tokens` a request may ask for; more gets 400."""
    default_max_tokens: int = Sampling.max_new_tokens
    """`max_tokens` when a request gives none (the same default as `tunesmith generate`)."""
    max_n: int = 4
    """Most choices per request (`n`); each is generated in turn."""
    max_prompt_tokens: int = 4096
    """Longest prompt after the chat template, in tokens; longer gets 400 (also capped by the model's context)."""
    max_queued: int = 8
    """Requests waiting for a place in the batch; one more gets 429 rather than waiting unboundedly."""
    max_batch: int = 8
    """Requests decoded together (continuous batching: a waiting one joins at the next token). A
    decoding step of a small model is bound by reading its weights, which the batch reads once: in
    eval 12 prompts took 12.3 s together against 60.9 s one at a time (SmolLM2-135M, 2 cores). Each
    row holds its own KV cache (SmolLM2-135M: 46 KB a token in float32), so 8 full 4096-token
    prompts cost ~1.5 GB; 1 decodes one request at a time."""
    max_stop: int = 4
    """Most stop strings per request (OpenAI's limit)."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, seconds to let running requests finish before they are cut off."""

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_tokens", "default_max_tokens", "max_n", "max_prompt_tokens", "max_stop",
                    "max_batch"):
            require(getattr(self, key) >= 1, f"serve.{key}", f"must be at least 1, got {getattr(self, key)}")
        require(self.max_queued >= 0, "serve.max_queued", f"must be non-negative, got {self.max_queued}")
        require(self.default_max_tokens <= self.max_tokens, "serve.default_max_tokens",
               f"must not exceed serve.max_tokens ({self.max_tokens}), got {self.default_max_tokens}")
        require(self.shutdown_grace_s >= 0, "serve.shutdown_grace_s",
                f"must be non-negative, got {self.shutdown_grace_s}")


@dataclass(frozen=True)
class ServerLimits:
    """What `tunesmith server` accepts besides its chat routes' `ServeLimits`; past a limit, a 4xx."""

    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest uploaded file (OpenAI's own limit for a fine-tuning file); counted while it arrives, 413 past it."""
    max_queued_jobs: int = 16
    """Jobs validating or queued behind the running one; one more gets 429."""
    page_limit: int = 20
    """Jobs, events or checkpoints in a page when a request gives no `limit` (OpenAI's default)."""
    max_page_limit: int = 100
    """Largest `limit` a page may ask for."""
    poll_s: float = 0.2
    """How often the job scheduler looks at the queue, the running worker and cancel requests."""

    def __post_init__(self) -> None:
        for key in ("max_upload_bytes", "max_queued_jobs", "page_limit", "max_page_limit"):
            require(getattr(self, key) >= 1, f"server.{key}", f"must be at least 1, got {getattr(self, key)}")
        require(self.page_limit <= self.max_page_limit, "server.page_limit",
                f"must not exceed server.max_page_limit ({self.max_page_limit}), got {self.page_limit}")
        require(self.poll_s > 0, "server.poll_s", f"must be positive, got {self.poll_s}")


@dataclass(frozen=True)
class CurveSettings:
    """How `tunesmith curve` samples the data and reads its curve (the rules in
    evaluation/learning_curve.py use these numbers and no others)."""

    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    """Shares of the training split, one run each. Doubling steps spread the points evenly on the
    log axis the power law is straight-ish on; four points fit its three parameters with one to spare,
    and the three smaller ones fit it again for the leave-largest-out check. The four runs cost
    1 + 1/2 + 1/4 + 1/8 = 1.9 full runs."""
    gain_share: float = 0.9
    """The curve reports the smallest fraction whose held-out loss gain over the base model reached
    this share of the full data's gain."""
    flat_relative_gain: float = 0.01
    """"More data would still help" needs doubling the data to lower the predicted held-out loss by
    at least this share (1%), with its 95% interval above zero; below it the curve "has flattened"."""
    resamples: int = 1000
    """Bootstrap resamples of the held-out examples for the intervals of the fit; each refits the
    curve (milliseconds each)."""
    seed: int = 0
    """Seeds the bootstrap resamples."""

    def __post_init__(self) -> None:
        require(len(self.fractions) >= 2, "curve.fractions", f"needs at least 2 fractions, got {list(self.fractions)}")
        require(all(0 < f <= 1 for f in self.fractions), "curve.fractions",
                f"must each be in (0, 1], got {list(self.fractions)}")
        require(list(self.fractions) == sorted(set(self.fractions)), "curve.fractions",
                f"must be distinct and increasing, got {list(self.fractions)}")
        require(0 < self.gain_share <= 1, "curve.gain_share", f"must be in (0, 1], got {self.gain_share}")
        require(self.flat_relative_gain >= 0, "curve.flat_relative_gain",
                f"must be non-negative, got {self.flat_relative_gain}")
        require(self.resamples >= 100, "curve.resamples", f"must be at least 100, got {self.resamples}")

    @staticmethod
    def parse_fractions(text: str) -> tuple[float, ...]:
        """`--fractions 0.125,0.25,0.5,1` as shares (the settings check their values)."""
        try:
            return tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"--fractions: expected comma-separated numbers such as 0.125,0.25,0.5,1, "
                              f"got {text!r}") from None
