"""A small byte-level text tokenizer for tiny presets (no pretrained tokenizer can be downloaded).

Vocabulary: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3, then the 256 bytes, then 256
reserved action tokens ``<act_0>..<act_255>`` at the end (the ids the action tokenizer uses).
Saved in the standard Hugging Face format (``tokenizer.json`` + ``tokenizer_config.json``), so the
same loader serves it and a real Llama tokenizer from a checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_byte_tokenizer(n_action_tokens: int = 256) -> PreTrainedTokenizerFast:
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in byte_chars:
        vocab[ch] = len(vocab)
    for i in range(n_action_tokens):
        vocab[f"<act_{i}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
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
    else:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    tok.padding_side = "left"
    return tok
