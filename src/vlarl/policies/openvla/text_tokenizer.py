"""A small byte-level BPE text tokenizer for tiny presets (no pretrained tokenizer can be downloaded).

Vocabulary: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3, the 256 bytes, BPE merges learnt from
a corpus (e.g. the prompts of a task set: "In: What action ... to open the drawer?" becomes about
20 tokens instead of 70 bytes; unseen words fall back to bytes), then 256 reserved action tokens
``<act_0>..<act_255>`` at the end (the ids the action tokenizer uses).
Saved in the standard Hugging Face format (``tokenizer.json`` + ``tokenizer_config.json``), so the
same loader serves it and a real Llama tokenizer from a checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_byte_tokenizer(
    corpus: list[str] = (), max_text_vocab: int = 1024, n_action_tokens: int = 256
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE merges on ``corpus`` (deterministic; none for an empty corpus)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max_text_vocab if corpus else len(SPECIALS) + 256,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(corpus)) or [""], trainer)
    tok.add_special_tokens([f"<act_{i}>" for i in range(n_action_tokens)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved in HF format in ``path`` (local files only; nothing is downloaded)."""
    path = Path(path)
    if (path / "tokenizer.json").is_file():  # the fast format needs no config.json model_type lookup
        tok = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    elif (path / "tokenizer_config.json").is_file():  # e.g. a sentencepiece tokenizer.model; never remote code
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    else:  # AutoTokenizer would fall back to config.json, whose auto_map stops at an interactive prompt
        raise FileNotFoundError(
            f"no tokenizer in {path}: it needs tokenizer.json (or tokenizer_config.json with its vocabulary files)"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    tok.padding_side = "left"
    return tok
