"""Every code block of README.md and docs/*.md runs, on the tiny model, or says why not.

What a block is, by its fence's info string:
- `python`: executed with `exec` in a fresh namespace, in a fresh work folder (below).
- `bash`, `sh`, `console`, or no info string: shell. Each command line (`\\` continuations joined,
  comments dropped) must be a `tunesmith ...` command (`.venv/bin/tunesmith` too) and is run
  through `tunesmith.cli.main` with click's CliRunner; it must exit 0. In a transcript (lines
  starting with `$ `) only those lines are commands; `$ echo $?` asserts the exit code printed on
  the next line, and every `error:` / `warning:` line shown must start a line of the real output.
- `yaml`: parsed; then, as a tunesmith config, through `tunesmith.load_config` (a fragment without
  `data` gets one added, so its keys and values are checked all the same).
- `json`: parsed, after the abridged parts (`{...}`, `[...]`, `, ...` before a closing bracket)
  are read as empty; `jsonl`: each line parsed.
- An info string that names a file after the kind (```` ```json grader.json ````) makes the block
  that file: it is written into the work folder of every block of its page, for the commands that
  read it.
- `text` (output, folder trees, a command's synopsis), `nginx`: not code; nothing to run.

A block that cannot run here has `<!-- doc-test: skip (REASON) -->` on the line right before its
fence (a GPU, the real model for minutes, a server that runs until stopped, a program not
installed). A skipped block is still read: Python compiled and its imports run, YAML and JSON
loaded. The pages that others own (server.md and ui.md take appended text only, graders.md is
theirs) have their skips in OWNED_ELSEWHERE instead, with the same reasons.

The work folder stands in for the user's: the names a block uses exist there, tiny.
`substitute` rewrites the real model and the bundled FAQ to the tiny model and a ten-row FAQ;
examples/faq-demo.yaml and compare-demo.yaml are tiny configs of the same names (the tiny model,
that FAQ, no forgetting probes during training and no KL-to-base term: on the tiny model they would
take most of the time and prove nothing a page shows). Shell blocks find runs/faq-demo, a finished
run of the tiny model, where `make demo` leaves it; Python blocks train their own.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import faq_rows, make_tiny_run, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!-- doc-test: skip \((?P<reason>[^)]+)\) -->")
SHELL, NOT_CODE = {"", "bash", "sh", "shell", "console"}, {"text", "nginx"}
FAQ_PACKAGE = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"

# (page, the start of the block's first line) -> why it does not run here, for pages whose blocks we may not mark.
OWNED_ELSEWHERE = {
    ("docs/server.md", "tunesmith server --home ~/tunesmith-home"): "a server that runs until stopped",
    ("docs/server.md", "import time"): "needs a running server and trains a job on the real model",
    ("docs/server.md", "HOME/"): "a folder tree, not code",
    ("docs/server.md", "result = client.fine_tuning.alpha.graders.run("): "needs a running server and its client",
    ("docs/server.md", "job = client.fine_tuning.jobs.create("): "needs a running server and its client",
    ("docs/server.md", "tunesmith server --home /srv/tunesmith"): "a server that runs until stopped",
    ("docs/server.md", "CUDA_VISIBLE_DEVICES=0 tunesmith server"): "a server on a GPU",
    ("docs/ui.md", "tunesmith ui --home"): "a server that runs until stopped, and a browser",
    ("docs/graders.md", "tunesmith grade GRADER.json DATA"): "a synopsis",
    ("docs/graders.md", "d.jsonl:2: item.reference_answer:"): "output, not a command",
    ("docs/graders.md", "$ tunesmith data check rft.jsonl --grader"):
        "the rows and grader of tests/test_data_check_grader.py, which runs it",
}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    filename: str | None  # the file the block is, when its info string names one
    text: str
    skip: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    page = path.relative_to(ROOT).as_posix()
    blocks, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})\s*(\S*)\s*(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = SKIP.fullmatch(before.strip())
        body = "\n".join(lines[i + 1:end]) + "\n"
        first = body.splitlines()[0] if body.strip() else ""
        elsewhere = [reason for (owner, start), reason in OWNED_ELSEWHERE.items()
                     if owner == page and first.startswith(start)]
        skip = marked.group("reason") if marked else next(iter(elsewhere), None)
        blocks.append(Block(page, i + 1, fence.group(2).lower(), fence.group(3) or None, body, skip))
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def test_the_blocks_are_found():
    by_lang = {lang: sum(b.lang == lang for b in BLOCKS) for lang in ("python", "bash", "yaml", "json")}
    assert all(by_lang.values()) and len(BLOCKS) > 40, by_lang  # a parser that found nothing passes nothing
    assert any(b.page == "README.md" and b.lang == "python" and b.skip is None for b in BLOCKS)


def test_every_block_has_a_known_kind():
    known = SHELL | NOT_CODE | {"python", "yaml", "json", "jsonl"}
    unknown = [f"{b.id} ```{b.lang}" for b in BLOCKS if b.lang not in known]
    assert not unknown, f"add the info string to the test's kinds, or use one it knows: {unknown}"


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a page: lower case, punctuation dropped, spaces to hyphens."""
    # without the code blocks, whose `# comments` are not headings
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_lead_somewhere(page):
    """Every relative link of a page names a file that exists, and a heading of it when it has #anchor."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


# --- the work folder -----------------------------------------------------------------------------

TICKETS = [  # what docs/data.md's transcript shows: line 2 empty, 3 a duplicate of 1, 4 an e-mail, 5 a bad role
    {"messages": [{"role": "user", "content": "Where is my order?"},
                  {"role": "assistant", "content": "It ships today."}]},
    {"messages": [{"role": "user", "content": "Can I return it?"}, {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "Where is my order?"},
                  {"role": "assistant", "content": "It ships today."}]},
    {"messages": [{"role": "user", "content": "Who do I write to?"},
                  {"role": "assistant", "content": "Write to ann@example.com."}]},
    {"messages": [{"role": "user", "content": "Hello?"}, {"role": "bot", "content": "Hi."}]},
]


def tiny_config(model_dir: Path, output: str, **keys) -> str:
    config = {"data": "../faq-en-alpaca.jsonl", "model": str(model_dir), "method": "lora", "output": output,
              "batch_size": 4, **keys}
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def work_template(tiny_model_dir, tmp_path_factory) -> Path:
    """The files the blocks name, tiny; a copy per block (`work`)."""
    folder = tmp_path_factory.mktemp("doc-work")
    write_jsonl(folder / "faq-en-alpaca.jsonl", faq_rows("instruction"))
    for name in ("faq.jsonl", "data.jsonl", "held-out.jsonl"):
        write_jsonl(folder / name, faq_rows("chat"))
    write_jsonl(folder / "tickets.jsonl", TICKETS)
    write_jsonl(folder / "pairs.jsonl",
                [{"prompt": r["instruction"], "chosen": r["output"], "rejected": "I do not know."}
                 for r in faq_rows("instruction")])
    examples = folder / "examples"
    examples.mkdir()
    # what the probes and the KL term cost
    no_probes = {"forgetting": {"measure_during_training": False, "kl_weight": 0.0}}
    (examples / "faq-demo.yaml").write_text(tiny_config(tiny_model_dir, "runs/faq-demo", **no_probes))
    (examples / "compare-demo.yaml").write_text(
        tiny_config(tiny_model_dir, "runs/compare-demo", val_fraction=0.2, max_steps=4, **no_probes))
    (folder / "runs").mkdir()
    make_tiny_run(tiny_model_dir, folder / "runs" / "faq-demo")
    (folder / "runs" / "faq-demo-faq.jsonl").unlink()  # make_tiny_run's data, not a run's
    return folder


@pytest.fixture
def work(work_template, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(work_template, folder, symlinks=True)
    monkeypatch.chdir(folder)
    return folder


def substitute(text: str, model_dir: Path) -> str:
    """The real model and data in a block -> the tiny ones (the work folder holds the rest)."""
    substitutions = {
        FAQ_PACKAGE: "faq-en-alpaca.jsonl",  # the bundled FAQ -> the ten-row FAQ
        "smollm2-135m-instruct": str(model_dir),  # the default model -> the 2-layer one
        ".venv/bin/tunesmith": "tunesmith",  # the venv's console script -> the CLI in this process
    }
    for real, tiny in substitutions.items():
        text = text.replace(real, tiny)
    return text


# --- running a block -----------------------------------------------------------------------------

def shell_commands(text: str) -> list[tuple[str, list[str]]]:
    """[(command, the output lines shown after it)]: every line, or in a transcript the `$ ` lines."""
    joined = re.sub(r"\\\n\s*", " ", text).splitlines()
    transcript = any(line.startswith("$ ") for line in joined)
    commands: list[tuple[str, list[str]]] = []
    for line in joined:
        if transcript and not line.startswith("$ "):
            if commands:
                commands[-1][1].append(line)
            continue
        command = line.removeprefix("$ ").split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            commands.append((command, []))
    return commands


def run_shell(text: str) -> None:
    from click.testing import CliRunner

    from tunesmith.cli import main

    exit_code = None
    for command, shown in shell_commands(text):
        if command == "echo $?":
            assert exit_code == int(shown[0]), f"the page shows exit {shown[0]}, the command exited {exit_code}"
            continue
        words = shlex.split(command)
        assert words[0] == "tunesmith", f"not a tunesmith command ({command!r}): mark the block skip with its reason"
        result = CliRunner().invoke(main, words[1:], catch_exceptions=False)
        exit_code = result.exit_code
        output = result.output.splitlines()
        for expected in shown:
            if expected.startswith(("error:", "warning:")):
                assert any(line.startswith(expected.strip()) for line in output), \
                    f"{command}: the page shows {expected!r}; the output was:\n{result.output}"
        if not any(c == "echo $?" for c, _ in shell_commands(text)):
            assert exit_code == 0, f"{command} exited {exit_code}:\n{result.output}"


def read_json(text: str):
    """The block's JSON, its abridged parts (`{...}`, `[...]`, `, ...` before a closing bracket) read as empty."""
    text = text.replace("{...}", "{}").replace("[...]", "[]")
    text = re.sub(r',\s*\.\.\.(?=\s*[}\]])', "", text)  # `, ...}`: further members left out
    return json.loads(text)


def check_yaml(text: str, work: Path) -> None:
    from tunesmith import load_config

    config = yaml.safe_load(text)
    assert isinstance(config, dict), "a YAML block is a tunesmith config or a part of one"
    if "data" in config:
        (work / "doc-config.yaml").write_text(text, encoding="utf-8")
        load_config(work / "doc-config.yaml")
    else:
        load_config(None, {"data": "faq.jsonl", **config})


def parse_only(block: Block) -> None:
    """A skipped block is still read: Python compiled and its imports run (a module that moved is
    caught where the block cannot run), YAML and JSON loaded."""
    if block.lang == "python":
        tree = ast.parse(block.text, block.id)
        imports = ast.Module([node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
        exec(compile(imports, block.id, "exec"), {})  # noqa: S102 - the page's own imports
    elif block.lang == "yaml":
        yaml.safe_load(block.text)
    elif block.lang == "json":
        read_json(block.text)
    elif block.lang == "jsonl":
        [json.loads(line) for line in block.text.splitlines() if line.strip()]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang not in NOT_CODE], ids=lambda b: b.id)
def test_block_runs(block, request, capsys):
    if block.skip is not None:
        parse_only(block)
        pytest.skip(block.skip)
    if block.lang in ("json", "jsonl"):
        parse_only(block)
        return
    work = request.getfixturevalue("work")
    model_dir = request.getfixturevalue("tiny_model_dir")
    for named in (b for b in BLOCKS if b.page == block.page and b.filename):  # the page's files, e.g. grader.json
        (work / named.filename).write_text(substitute(named.text, model_dir), encoding="utf-8")
    text = substitute(block.text, model_dir)
    if block.lang == "python":
        shutil.rmtree(work / "runs" / "faq-demo")  # Python blocks train their own
        exec(compile(text, block.id, "exec"), {"__name__": "__doc_example__"})  # noqa: S102 - the page's own code
    elif block.lang == "yaml":
        check_yaml(text, work)
    else:
        run_shell(text)
