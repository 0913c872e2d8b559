"""Shared fixtures: a tiny random Llama with a real byte-level BPE tokenizer and a ChatML template,
built from a config in a temporary directory (offline, ~1 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # `make test` runs the suite in several processes (pytest-xdist): each gets its share of the cores
    # for torch's threads, and so do the processes it starts (they inherit the variable). Two workers of
    # two threads each on two cores stall: OpenMP's threads wait for each other at every operation.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))

# SmolLM2's template, default system prompt included, so tests see what the default model does.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is a building permit? A building permit is a decision from the municipality.",
    "How long does it take? Usually four to six weeks, sometimes twelve.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } < > | : ; , . ! ?",
    "system user assistant helpful You are a helpful assistant.",
]


def build_tokenizer(chat_template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_model_dir(path: Path, chat_template: str | None = CHATML, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """Every cache (TUNESMITH_CACHE_DIR) goes to a per-session folder, never the user's, except the
    converted default model, linked in from the user's cache: the slow tests reuse it."""
    from tunesmith.config import cache_dir

    shared_models = cache_dir() / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    folder = tmp_path_factory.mktemp("cache")
    (folder / "models").symlink_to(shared_models, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESMITH_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama with a ChatML tokenizer, saved as a Hugging Face directory."""
    return build_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


FAQ = [
    ("What is a building permit?", "A building permit is a decision from the municipality."),
    ("How long does a permit take?", "Usually four to six weeks."),
    ("Who decides on permits?", "The municipality's building committee."),
    ("Can I build without a permit?", "Small sheds under fifteen square metres, sometimes."),
    ("What does a permit cost?", "It depends on the project, often a few thousand."),
    ("Do I need drawings?", "Yes, the application needs drawings and a site plan."),
    ("Who is the quick brown fox?", "The fox that jumps over the lazy dog."),
    ("Is twelve weeks normal?", "For large projects twelve weeks is normal."),
    ("What are the numbers?", "0123456789 are the numbers."),
    ("Are you helpful?", "You are a helpful assistant, and so am I."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def faq_rows(fmt: str) -> list[dict]:
    """The ten-row FAQ in one of the five formats."""
    if fmt == "chat":
        return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FAQ]
    if fmt == "sharegpt":
        return [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in FAQ]
    if fmt == "instruction":
        return [{"instruction": q, "input": "", "output": a} for q, a in FAQ]
    if fmt == "prompt_completion":
        return [{"prompt": q, "completion": a} for q, a in FAQ]
    if fmt == "text":
        return [{"text": f"{q} {a}"} for q, a in FAQ]
    raise ValueError(fmt)


@pytest.fixture
def faq_file(tmp_path):
    """A factory: faq_file('chat') writes the ten-row FAQ in that format and returns its path."""
    return lambda fmt="chat": write_jsonl(tmp_path / f"faq-{fmt}.jsonl", faq_rows(fmt))


def make_tiny_run(model_dir: Path, output: Path, method: str = "lora") -> Path:
    """Train two steps on the FAQ; for adapters, move lora_B away from its zero init (with B = 0 a
    broken merge or GGUF conversion would still pass) and save the adapter again."""
    import torch
    from safetensors.torch import load_file, save_file

    from tunesmith import load_config, train

    data = write_jsonl(output.parent / f"{output.name}-faq.jsonl", faq_rows("chat"))
    config = load_config(None, {"data": str(data), "model": str(model_dir), "output": str(output),
                                "method": method, "max_steps": 2, "batch_size": 4, "lr": 1e-2,
                                "forgetting": {"measure_during_training": False}})
    train(config, show_progress=False)
    if method != "full":
        path = output / "adapter" / "adapter_model.safetensors"
        weights = load_file(path)
        generator = torch.Generator().manual_seed(0)
        for name, tensor in weights.items():
            if "lora_B" in name:
                weights[name] = torch.randn(tensor.shape, generator=generator) * 0.5
        save_file(weights, path)
    return output


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished LoRA run on the tiny model with non-zero adapter weights."""
    return make_tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "tiny-lora")


@pytest.fixture(scope="session")
def embedder():
    """The real all-MiniLM-L6-v2 encoder (22M parameters, ~2 s to load), shared by every test."""
    from tunesmith.retrieval import Embedder

    return Embedder.load()


LLAMA_CPP_GREEDY = """
import json, sys
import llama_cpp
path, prompt, n_tokens, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
out = []
for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
    out.append(int(token))
    if len(out) == n_tokens or token == llm.token_eos():
        break
print(json.dumps(out))
"""


def llama_cpp_greedy(path: Path, prompt: list[int], n_tokens: int, threads: int = 1) -> list[int]:
    """Greedy tokens from llama.cpp itself (llama-cpp-python) on the CPU, in a child process: a build
    that executes an instruction this CPU lacks dies with SIGILL, which fails the test by name
    instead of killing pytest."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install '.[llama-cpp]')")
    done = subprocess.run([sys.executable, "-c", LLAMA_CPP_GREEDY, str(path), json.dumps(prompt), str(n_tokens),
                           str(threads)], capture_output=True, text=True, timeout=300)
    if done.returncode < 0:
        pytest.fail(f"llama.cpp died with {signal.Signals(-done.returncode).name} on {path.name} at {threads} "
                    f"thread(s): its build does not run on this CPU\n{done.stderr[-2000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def twin_of_trl_model(trl_model, model_dir: Path, lora):
    """Our packed-attention peft model holding the same weights as a TRL trainer's, whose LoRA B is
    first made non-zero (seeded): with B = 0 the adapter is a no-op and a parity test of its
    gradients would pass whatever the loss did with it."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.model.attention import use_packed_attention

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trl_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    use_packed_attention(base)
    ours = get_peft_model(base, lora)
    ours.load_state_dict(trl_model.state_dict())
    return ours
