"""The engines that can answer for a run (`--engine` of serve, chat and compare): transformers, the
default and the reference (tunesmith's own decoding, inference/decode.py and batching.py);
llama.cpp on the run's GGUF export (CPU); vLLM with the run's LoRA adapter per request (GPU).

An engine here takes token-id prompts rendered by tunesmith's own chat template and yields token
ids, so prompts, end-of-turn stops, stop strings and usage are tunesmith's whatever decodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Protocol, Sequence, get_args

from ..errors import ConfigError
from ..settings import DEFAULT_GGUF_TYPE, Sampling

EngineName = Literal["transformers", "llama.cpp", "vllm"]
ENGINES: tuple[str, ...] = get_args(EngineName)
DEFAULT_ENGINE: EngineName = "transformers"  # the reference: every other engine is tested against it
INSTALL = {
    "llama.cpp": 'pip install -e ".[llama-cpp]" (builds llama.cpp from source: about 7 minutes on 2 cores)',
    "vllm": 'pip install vllm (Linux with an NVIDIA GPU: vLLM does not run on a CPU)',
}


class EngineUnavailable(ConfigError):
    """The engine's package is not installed (or cannot run here); the message says how to get it."""


class TokenEngine(Protocol):
    """What serve, chat and compare need from an engine other than transformers."""

    def tokens(self, prompt_ids: Sequence[int], sampling: Sampling) -> Iterator[int]:
        """The answer's token ids as they are decoded, until the caller stops reading or the engine
        reaches an end-of-turn token (yielded) or `sampling.max_new_tokens`."""
        ...

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy answers of many prompts, each cut after its first end-of-turn token (kept)."""
        ...


def open_engine(name: str, run: str | Path, eos_ids: Sequence[int], gguf_type: str = DEFAULT_GGUF_TYPE,
                log: Any = print) -> TokenEngine:
    """The engine `name` loaded for RUN (not for transformers, which the callers load themselves)."""
    if name == "llama.cpp":
        return LlamaCppEngine(run, eos_ids, gguf_type, log)
    if name == "vllm":
        return VllmEngine(run, eos_ids)
    raise ConfigError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")


def _require(module: str, engine: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EngineUnavailable(f"--engine {engine} needs the '{module}' package, which is not installed: "
                                f"{INSTALL[engine]}; or use --engine transformers") from None


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python on RUN/export-gguf, exported on first use with the
    exporter's parity check (its logits against base + adapter, within the GGUF type's tolerance)."""

    def __init__(self, run: str | Path, eos_ids: Sequence[int], gguf_type: str = DEFAULT_GGUF_TYPE,
                 log: Any = print) -> None:
        llama_cpp = _require("llama_cpp", "llama.cpp")
        from ..run import RunDir

        self.path = gguf_file(RunDir.open(run).path, gguf_type, log)
        self.eos = frozenset(eos_ids)
        # n_ctx 0 takes the model's own context, as transformers decodes with it.
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=0, verbose=False)

    def tokens(self, prompt_ids: Sequence[int], sampling: Sampling) -> Iterator[int]:
        self.llm.reset()  # no prefix reuse across requests: each answer as if alone
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed)
        greedy = sampling.temperature <= 0
        stream = self.llm.generate(list(prompt_ids), temp=0.0 if greedy else sampling.temperature,
                                   top_p=1.0 if greedy else sampling.top_p, top_k=1 if greedy else 50, min_p=0.0,
                                   repeat_penalty=sampling.repetition_penalty, reset=True)
        for count, token in enumerate(stream, start=1):
            yield int(token)
            if token in self.eos or count >= sampling.max_new_tokens:
                return

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
        sampling = Sampling(max_new_tokens=max_new_tokens)
        return [list(self.tokens(p, sampling)) for p in prompts]


def gguf_file(run_path: Path, gguf_type: str, log: Any) -> Path:
    """RUN/export-gguf/model-TYPE.gguf, exported now when it is not there yet."""
    from ..export.exporter import export_run

    folder = run_path / "export-gguf"
    wanted = folder / f"model-{gguf_type}.gguf"
    if not wanted.is_file():
        log(f"exporting {run_path.name} as GGUF {gguf_type} for llama.cpp (once; kept in {folder})")
        export_run(run_path, "gguf", folder, gguf_type=gguf_type, overwrite=True, log=log)
    return wanted


class VllmEngine:
    """vLLM: the base loaded once with LoRA enabled, the run's adapter passed with every request."""

    def __init__(self, run: str | Path, eos_ids: Sequence[int]) -> None:
        vllm = _require("vllm", "vllm")
        from vllm.lora.request import LoRARequest

        from ..run import RunDir

        run_dir = RunDir.open(run)
        config = run_dir.config()
        if config.method == "full":
            raise ConfigError("--engine vllm serves LoRA runs (base + adapter); export a full run with "
                              "`tunesmith export --format merged` and point vLLM at that folder")
        from ..model.tokenizer import resolve_model_path

        self.vllm, self.eos = vllm, frozenset(eos_ids)
        self.llm = vllm.LLM(model=resolve_model_path(config.model), enable_lora=True)
        self.lora = LoRARequest(run_dir.path.name, 1, str(run_dir.path / "adapter"))

    def _params(self, sampling: Sampling) -> Any:
        return self.vllm.SamplingParams(max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                        top_p=sampling.top_p, seed=sampling.seed,
                                        repetition_penalty=sampling.repetition_penalty,
                                        stop_token_ids=sorted(self.eos))

    def tokens(self, prompt_ids: Sequence[int], sampling: Sampling) -> Iterator[int]:
        yield from self.generate_with([list(prompt_ids)], self._params(sampling))[0]

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
        return self.generate_with(prompts, self._params(Sampling(max_new_tokens=max_new_tokens)))

    def generate_with(self, prompts: Sequence[list[int]], params: Any) -> list[list[int]]:
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=self.lora)
        return [list(o.outputs[0].token_ids) for o in outputs]
