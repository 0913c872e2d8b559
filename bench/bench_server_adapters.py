"""Peak RSS of `tunesmith server`'s model: the base with one tuned adapter, then with two (one base
copy shared by both, as the server loads them), each answering a prompt.

    python bench/bench_server_adapters.py [--model smollm2-135m-instruct] [--r 8]

Two LoRA adapters with random (non-zero) weights are made for the model in a temporary folder, then
a fresh process loads the base, attaches the first and answers, then the second and answers; it
prints ru_maxrss after each. Two adapters should cost the first's RSS plus the adapters' few MB.
Memory, not matmul speed: the JSON names the machine (bench/machine.py) and measures no peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import machine_record


def make_adapters(model_name: str, r: int, folder: Path) -> list[Path]:
    import torch

    from tunesmith.config import LoraConfig
    from tunesmith.model.loading import add_adapter, load_model

    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = add_adapter(load_model(model_name), "lora", LoraConfig(r=r))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)  # B = 0 would make both adapters the base
        model.save_pretrained(folder / f"adapter-{seed}", safe_serialization=True)
        paths.append(folder / f"adapter-{seed}")
    return paths


def measure(model_name: str, adapters: list[str]) -> None:
    """In a fresh process: RSS with the base and the first adapter, then with the second as well."""
    from tunesmith.data.render import encode_prompt
    from tunesmith.inference.streaming import complete
    from tunesmith.model.loading import attach_adapter, load_model, use_adapter
    from tunesmith.model.tokenizer import load_tokenizer
    from tunesmith.settings import Sampling

    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name).eval()
    prompt = encode_prompt([{"role": "user", "content": "Do I need a permit for a shed?"}], tokenizer)
    rows = {}
    for index, path in enumerate(adapters, 1):
        model = attach_adapter(model, Path(path), f"job{index}")
        for name in [f"job{i}" for i in range(1, index + 1)]:
            use_adapter(model, name)
            complete(model, tokenizer, prompt, Sampling(max_new_tokens=16))
        rows[f"{index} adapter(s)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"machine": machine_record(), "model": model_name, "peak_rss_mib": rows,
                      "ratio": rows["2 adapter(s)"] / rows["1 adapter(s)"]}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)  # the fresh process's part
    args = parser.parse_args()
    if args.measure:
        measure(args.model, args.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(args.model, args.r, Path(tmp))
        subprocess.run([sys.executable, __file__, "--model", args.model, "--measure", *map(str, adapters)], check=True)


if __name__ == "__main__":
    main()
