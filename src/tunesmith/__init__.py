"""tunesmith: fine-tune open language models on small, focused data, and prove they did not forget."""

from .compare import CompareSettings, compare_run
from .config import ConfigError, LoraConfig, TrainConfig, load_config
from .data import DataError, prepare_data, read_records
from .evaluate import evaluate_run
from .generate import generate, load_run
from .retrieval import RetrievalSettings, Retriever
from .train import TrainResult, train

__all__ = [
    "CompareSettings", "ConfigError", "DataError", "LoraConfig", "RetrievalSettings", "Retriever", "TrainConfig",
    "TrainResult", "compare_run", "evaluate_run", "generate", "load_config", "load_run", "prepare_data",
    "read_records", "train",
]
__version__ = "0.1.0"
