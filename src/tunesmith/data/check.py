"""The data check: every problem of a training (and evaluation) file, before a minute of training.

Streams each file in batches, so memory holds one batch plus a few numbers per row. Tokenizes
through the training renderer (`encode_conversations` / `encode_document`), so lengths, label
masks and truncation are exactly what training will see.
"""

from __future__ import annotations

import re
import statistics
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

from .check_report import CheckReport, SplitStats
from .columns import ColumnMap, check_columns
from .formats import GRADED_FORMATS, RFT_NOT_SUPERVISED
from .limits import CheckLimits
from .pii import find_pii
from .preference import check_pairs, is_preference_data
from .prepare import held_out_count, small_data_warnings
from .records import (
    Conversation,
    DataIssue,
    Document,
    Message,
    Record,
    check_readable,
    iter_source,
    resolve_data_path,
    with_system_prompt,
)
from .render import (
    END_OF_TURN_TOKENS,
    IGNORE,
    Example,
    TemplateError,
    encode_conversation,
    encode_conversations,
    encode_document,
    end_of_turn_ids,
    template_layout,
)
from .similarity import DuplicateIndex, RowPlaces, normalize, signature

BATCH_ROWS = 512
"""Rows tokenized per call: large enough for the fast tokenizer's batching, small for memory."""
UNLIMITED = 1 << 62  # encode without truncating; the check works out what truncation would cut


def check_files(data: str | Path, eval_data: str | Path | None, tokenizer: Any, max_seq_tokens: int,
                limits: CheckLimits | None = None, show: int = 0, *, columns: ColumnMap | None = None,
                system_prompt: str | None = None, val_fraction: float | None = None,
                reinforcement: bool = False) -> CheckReport:
    """Check the training file (or folder) and, when given, the evaluation file and leakage between
    them. `columns` and `system_prompt` as in `read_records`; `val_fraction` (without an eval file)
    lets the check say whether the held-out share is big enough to judge a run; `reinforcement`: RFT
    prompts are expected (`data check --grader`)."""
    limits = limits or CheckLimits()
    if is_preference_data(data, columns):  # pairs have their own checks (data/preference.py)
        return CheckReport(*check_pairs(data, eval_data, tokenizer, max_seq_tokens, limits, columns=columns,
                                        system_prompt=system_prompt))
    report = CheckReport()
    checker = _Checker(tokenizer, max_seq_tokens, limits, report, show, check_columns(columns or {}), system_prompt)
    train_index = DuplicateIndex(limits.near_duplicate_jaccard)
    splits = {"train": checker.check_file(data, "train", train_index, None)}
    if eval_data is not None:
        eval_index = DuplicateIndex(limits.near_duplicate_jaccard)
        splits["eval"] = checker.check_file(eval_data, "eval", eval_index, train_index)
    _warn_small_data(checker, splits, val_fraction)
    for split in splits.values():
        if split.format in GRADED_FORMATS and not reinforcement:
            checker.error(split.file, 0, "(file)", "format", RFT_NOT_SUPERVISED)
    train_file = str(resolve_data_path(data))
    for issues in (report.errors, report.warnings):
        issues.sort(key=lambda i: (not _inside(i.file, train_file), i.file, i.line))
    report.stats = {"max_seq_tokens": max_seq_tokens, "splits": {k: v.to_dict() for k, v in splits.items()},
                    "system_prompt_tokens": system_prompt_tokens(tokenizer, system_prompt)}
    if eval_data is not None:
        report.stats["leakage"] = checker.leakage
    return report


def _inside(file: str, data: str) -> bool:
    return file == data or file.startswith(data.rstrip("/") + "/")


def system_prompt_tokens(tokenizer: Any, system_prompt: str | None) -> int:
    """Tokens the system prompt adds to each conversation without one (its text and its turn's
    markup, less any default system turn the template writes itself); 0 when there is none."""
    if not system_prompt or not getattr(tokenizer, "chat_template", None):
        return 0
    probe = Conversation((Message("user", "?"), Message("assistant", "!")), "")
    try:
        with_it = encode_conversation(with_system_prompt(probe, system_prompt), tokenizer, UNLIMITED)[0]
        without = encode_conversation(probe, tokenizer, UNLIMITED)[0]
    except TemplateError:
        return 0  # the template refuses a system turn: every row says so in the errors
    return len(with_it.input_ids) - len(without.input_ids)


def _warn_small_data(checker: _Checker, splits: dict[str, SplitStats], val_fraction: float | None) -> None:
    """The `small data` warnings: the validation set as training will split it, and the training set."""
    train = splits["train"]
    if train.rows == 0:
        return  # an empty file has its own error
    if "eval" in splits:
        n_train, n_val, val_file = train.examples, splits["eval"].examples, splits["eval"].file
    elif val_fraction is not None:
        # as prepare_data splits: by row, or by document when there are several
        units = train.examples - train.document_examples + train.documents if train.documents >= 2 else train.examples
        if units < 2:
            return  # the split itself fails, with its own message
        n_val = round(train.examples * held_out_count(units, val_fraction) / units)
        n_train, val_file = train.examples - n_val, train.file
    else:
        n_train, n_val, val_file = train.examples, None, train.file
    val_message, train_message = small_data_warnings(n_train, n_val, None if "eval" in splits else val_fraction,
                                                     checker.limits)
    for file, message in ((val_file, val_message), (train.file, train_message)):
        if message:
            checker.warn(file, 0, "(file)", "small data", message)


class _Checker:
    """State shared across the files of one check: tokenizer facts, report, leakage counts."""

    def __init__(self, tokenizer: Any, max_seq_tokens: int, limits: CheckLimits, report: CheckReport, show: int,
                 columns: ColumnMap, system_prompt: str | None):
        self.tokenizer = tokenizer
        self.columns = columns
        self.system_prompt = system_prompt
        self.max_seq_tokens = max_seq_tokens
        self.limits = limits
        self.report = report
        self.show = show
        self.eot = end_of_turn_ids(tokenizer)
        self.leakage = {"exact": 0, "near": 0, "same_prompt": 0}
        self.layouts: dict[tuple[str, ...], str | None] = {}  # roles -> template error or None
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.reported_no_template = False  # one error for the file, not one per row
        # normalized prompt hash -> line and answer hash (ints only: cheap for the GC); this file's
        # and the training file's
        self.prompts: dict[int, int] = {}
        self.answers: dict[int, int] = {}
        self.train_prompts: dict[int, int] = {}
        self.train_answers: dict[int, int] = {}
        self.places = RowPlaces()
        self.train_file: str | None = None
        specials = set(getattr(tokenizer, "all_special_tokens", []) or []) | set(END_OF_TURN_TOKENS)
        specials |= {t.content for t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values()
                     if getattr(t, "special", False)}
        specials = {s for s in specials if s and not s.isalnum()}
        self.control_re = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))) \
            if specials else None

    def warn(self, file: str, line: int, field_name: str, kind: str, message: str) -> None:
        self.report.warnings.append(DataIssue(file, line, field_name, message, kind))

    def error(self, file: str, line: int, field_name: str, kind: str, message: str) -> None:
        self.report.errors.append(DataIssue(file, line, field_name, message, kind))

    def check_file(self, path: str | Path, split: str, index: DuplicateIndex,
                   reference: DuplicateIndex | None) -> SplitStats:
        resolved = resolve_data_path(path)
        stats = SplitStats(str(resolved))
        self.prompts, self.answers = {}, {}
        check_readable(resolved)
        issues: list[DataIssue] = []
        notes: list[DataIssue] = []
        batch: list[tuple[str, Record]] = []
        for item in iter_source(resolved, self.limits, issues, notes, columns=self.columns):
            batch.append(item)
            if len(batch) == BATCH_ROWS:
                self._check_batch(batch, stats, split, index, reference)
                batch = []
        if batch:
            self._check_batch(batch, stats, split, index, reference)
        for issue in issues:
            self.report.errors.append(replace(issue, kind=issue.kind or "format"))
        self.report.warnings.extend(notes)
        if stats.rows == 0 and not issues:
            self.error(str(resolved), 1, "(file)", "empty", "has no rows — add one JSON object per line")
        self._after_file(stats)
        if split == "train":
            self.train_prompts, self.train_answers = self.prompts, self.answers
            # One training file: its rows are "training line N"; a folder's are "training FILE:N".
            self.train_file = self.places.only_file()
        return stats

    def _check_batch(self, batch: list[tuple[str, Record]], stats: SplitStats, split: str,
                     index: DuplicateIndex, reference: DuplicateIndex | None) -> None:
        conversations: list[Conversation] = []
        fmt_of: dict[str, str] = {}
        for fmt, record in batch:
            stats.rows += 1
            stats.format = stats.format or fmt
            file, line = _where(record.source)
            fmt_of[record.source] = fmt
            self._check_text(record, fmt, file, line, stats, index, reference)
            if isinstance(record, Document):
                examples = encode_document(record, self.tokenizer, self.max_seq_tokens)
                stats.examples += len(examples)
                if record.whole_file:
                    stats.documents += 1
                    stats.document_examples += len(examples)
                if record.extracted is not None:
                    stats.document_files.append({"file": file, **record.extracted.summary()})
                    if record.extracted.empty_pages:
                        self.warn(file, 0, "document", "empty pages", record.extracted.empty_pages_message())
                stats.lengths.append(sum(len(e.input_ids) for e in examples))
                stats.trained_tokens += sum(e.n_trained for e in examples)
                self._keep_preview(examples[:1], split)
                continue
            if not self.has_template:
                if not self.reported_no_template:
                    self.reported_no_template = True
                    self.error(file, line, "(template)", "template", "the model has no chat template, so "
                               "conversations cannot be rendered — set `chat_template` in the config to a name "
                               "('chatml') or a Jinja string, or use a chat model")
                continue
            given = with_system_prompt(record, self.system_prompt)
            stats.system_prompt_added += given is not record
            record = given
            roles = tuple(m.role for m in record.messages)
            if roles not in self.layouts:
                try:
                    template_layout(roles, self.tokenizer)
                    self.layouts[roles] = None
                except TemplateError as exc:
                    self.layouts[roles] = str(exc)
            problem = self.layouts[roles]
            if problem is not None:
                self.error(file, line, _turns_field(fmt), "template",
                           f"role order ({', '.join(roles)}) is refused by the model's chat template: {problem} "
                           "— reorder the turns (usually system?, then user/assistant alternating)")
                continue
            conversations.append(record)
        for conversation, (example, _) in zip(conversations, encode_conversations(conversations, self.tokenizer,
                                                                                   UNLIMITED)):
            self._check_example(conversation, fmt_of[conversation.source], example, stats, split)

    def _check_example(self, conversation: Conversation, fmt: str, example: Example, stats: SplitStats,
                       split: str) -> None:
        file, line = _where(conversation.source)
        n = self.max_seq_tokens
        length = len(example.input_ids)
        trained = [t for t in example.targets if t != IGNORE]
        kept = sum(1 for t in example.targets[: n - 1] if t != IGNORE) if length > n else len(trained)
        stats.examples += 1
        stats.lengths.append(length)
        stats.trained_tokens += kept
        field_name = _turns_field(fmt)
        if not trained and fmt not in GRADED_FORMATS:  # an RFT prompt has no answer to train, by design
            stats.no_trained_tokens += 1
            self.warn(file, line, field_name, "no trained tokens",
                      "has no trained tokens (every assistant turn has weight 0) — it costs compute and teaches "
                      "nothing; give an assistant turn weight 1 or drop the row")
        elif length > n and trained:
            stats.over_max_seq_tokens += 1
            stats.cut_trained_tokens += len(trained) - kept
            if kept == 0:
                self.error(file, line, field_name, "truncation",
                           f"is {length} tokens; every one of its {len(trained)} trained tokens lies past "
                           f"max_seq_tokens={n}, so training would learn nothing from it — shorten the prompt "
                           "or raise --max-seq-tokens")
            else:
                self.warn(file, line, field_name, "truncation",
                          f"is {length} tokens, over max_seq_tokens={n}: truncation cuts {length - n} tokens, "
                          f"{len(trained) - kept} of them trained — shorten it or raise --max-seq-tokens")
        if trained:
            if any(t in self.eot for t in trained):
                stats.end_of_turn_trained += 1
            stats.answer_lines.append(line)
            stats.answer_tokens.append(len(trained))
            if not stats.files or stats.files[-1] != file:
                stats.files.append(file)
            stats.answer_files.append(len(stats.files) - 1)
        answer = " ".join(m.content.strip() for m in conversation.messages if m.role == "assistant" and m.trained)
        if trained and len(answer) < self.limits.short_answer_chars:
            stats.short_answers += 1
            self.warn(file, line, _answer_field(fmt, conversation), "short answer",
                      f"the answer {answer!r} is suspiciously short — is it the whole answer?")
        self._keep_preview([example], split)

    def _check_text(self, record: Record, fmt: str, file: str, line: int, stats: SplitStats,
                    index: DuplicateIndex, reference: DuplicateIndex | None) -> None:
        """Duplicates, leakage, control-token strings and PII: the checks that read the text itself."""
        if isinstance(record, Document):
            parts = [("text", record.text)]
        else:
            parts = [(_message_field(fmt, i, m.role), m.content) for i, m in enumerate(record.messages)]
        for name, text in parts:
            if self.control_re is not None:
                hit = self.control_re.search(text)
                if hit is not None:
                    stats.control_token_strings += 1
                    self.warn(file, line, name, "control token string",
                              f"contains the control-token string {hit.group()!r}; training keeps it as plain text, "
                              "but a model that sees it in prompts may stop or switch roles — remove it if pasted "
                              "by mistake")
            for kind, masked in find_pii(text):
                stats.pii[kind] += 1
                self.warn(file, line, name, "pii", f"looks like {_PII_NAMES[kind]} ({masked}) — remove or "
                          "replace personal data before training")
        # Fingerprint what the row teaches; a shared system prompt would make every row look alike.
        if isinstance(record, Document):
            body = normalize(record.text)
        else:
            body = normalize(" ".join(m.content for m in record.messages if m.role != "system"))
        sig = signature(body)
        match = index.find(body, sig)
        if match is not None:
            kind, first, score = match
            if kind == "exact":
                stats.exact_duplicates += 1
                self.warn(file, line, "(row)", "duplicate",
                          f"duplicates {self.places.text(first, file)} (after normalizing case, spacing and "
                          "punctuation) — drop one: duplicates over-weight a row and leak into the validation split")
            else:
                stats.near_duplicates += 1
                self.warn(file, line, "(row)", "near duplicate",
                          f"is a near-duplicate of {self.places.text(first, file)} (~{score:.0%} overlap) "
                          "— keep the better one")
        if reference is not None:
            leak = reference.find(body, sig)
            if leak is not None:
                kind, first, score = leak
                self.leakage[kind] += 1
                how = "the same as" if kind == "exact" else f"a near-duplicate (~{score:.0%}) of"
                self.warn(file, line, "(row)", "leakage",
                          f"is {how} training {self.places.text(first, self.train_file)} — evaluation rows seen "
                          "in training overstate the score; remove it from one of the files")
        if match is None or match[0] != "exact":
            index.add(body, sig, self.places.number(file, line))
        if isinstance(record, Conversation):
            self._check_prompt(record, file, line, reference is not None, match is None)

    def _check_prompt(self, record: Conversation, file: str, line: int, is_eval: bool, distinct: bool) -> None:
        prompt = hash(normalize(" ".join(m.content for m in record.messages if m.role == "user")))
        answer = hash(normalize(" ".join(m.content for m in record.messages if m.role == "assistant")))
        earlier = self.prompts.get(prompt)
        if earlier is not None and self.answers[prompt] != answer and distinct:
            self.warn(file, line, "(row)", "conflicting answers",
                      f"asks the same as {self.places.text(earlier, file)} but answers differently — the model "
                      "learns a blend; keep one answer")
        if earlier is None:
            self.prompts[prompt], self.answers[prompt] = self.places.number(file, line), answer
        if is_eval:
            seen = self.train_prompts.get(prompt)
            if seen is not None and self.train_answers[prompt] != answer:
                self.leakage["same_prompt"] += 1
                self.warn(file, line, "(row)", "leakage",
                          f"asks the same as training {self.places.text(seen, self.train_file)} — the "
                          "evaluation then tests recall of a training question; remove it from one of the files")

    def _after_file(self, stats: SplitStats) -> None:
        """Checks that need the whole file: long answers against the median, end-of-turn training."""
        if stats.answer_tokens:
            median = statistics.median(stats.answer_tokens)
            cap = max(self.limits.long_answer_ratio * median, self.limits.long_answer_min_tokens)
            for line, n, f in zip(stats.answer_lines, stats.answer_tokens, stats.answer_files):
                if n > cap:
                    stats.long_answers += 1
                    self.warn(stats.files[f], line, "(answer)", "long answer",
                              f"trains {n} tokens, {n / median:.0f}x the median answer ({median:g}) — check that "
                              "it is one answer, not several pasted together")
            missing = len(stats.answer_tokens) - stats.end_of_turn_trained
            if missing:
                first = stats.answer_lines[0]
                self.warn(stats.files[0], first, "(template)", "end of turn not trained",
                          f"{missing} of {len(stats.answer_tokens)} examples never train the end-of-turn token, "
                          "so the model will not learn to stop — use a chat template that closes assistant turns "
                          "with the tokenizer's EOS")
            stats.answer_lines, stats.answer_tokens, stats.answer_files = array("I"), array("I"), array("I")

    def _keep_preview(self, examples: list[Example], split: str) -> None:
        if split == "train" and len(self.report.previews) < self.show:
            self.report.previews.extend(examples[: self.show - len(self.report.previews)])


_PII_NAMES = {"email": "an e-mail address", "phone": "a phone number", "card": "a payment card number (Luhn-valid)"}


def _where(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return file, int(line) if line.isdigit() else 0  # file:p12 or file:§heading: the file as a whole


def _turns_field(fmt: str) -> str:
    return {"chat": "messages", "rft": "messages", "sharegpt": "conversations", "instruction": "output",
            "prompt_completion": "completion"}.get(fmt, "text")


def _message_field(fmt: str, i: int, role: str) -> str:
    """The user's own name for message i: messages[1].content, output, completion, ..."""
    if fmt in ("chat", "rft"):
        return f"messages[{i}].content"
    if fmt == "sharegpt":
        return f"conversations[{i}].value"
    if fmt == "instruction":
        return {"system": "system", "user": "instruction", "assistant": "output"}[role]
    return {"user": "prompt", "assistant": "completion"}.get(role, role)


def _answer_field(fmt: str, conversation: Conversation) -> str:
    last = max(i for i, m in enumerate(conversation.messages) if m.role == "assistant")
    return _message_field(fmt, last, "assistant")
