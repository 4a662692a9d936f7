"""Input side of training: synthetic tasks, chat templates, corpus, tokenizers, grain pipelines.

This package never imports the model; the train loop imports it.
"""

from r1jax.data.chat import format_completion, format_example, format_prompt
from r1jax.data.corpus import corpus_example, pretraining_documents
from r1jax.data.layouts import FieldMap
from r1jax.data.pipeline import (TOKEN_KEYS, SkippedRows, pretraining_batches, rl_prompt_batches,
                                 sft_batches)
from r1jax.data.sources import (corpus_dataset, distinct_problems, examples_of, file_dataset,
                                heldout_problems, is_data_path, task_dataset)
from r1jax.data.tasks import HELDOUT, TRAIN
from r1jax.data.chat_template import ChatTemplate, ChatTemplateError
from r1jax.data.hf_tokenizer import HFTokenizer
from r1jax.data.text_tokenizer import TextTokenizer
from r1jax.data.tokenizer import Tokenizer, load_or_train_tokenizer
from r1jax.data.tokenizer_files import load_tokenizer, vocabulary_difference

__all__ = [
    "ChatTemplate", "ChatTemplateError", "FieldMap", "HELDOUT", "HFTokenizer", "SkippedRows",
    "TOKEN_KEYS", "TRAIN", "TextTokenizer", "Tokenizer", "corpus_dataset", "corpus_example",
    "distinct_problems", "examples_of", "file_dataset", "format_completion", "format_example",
    "format_prompt", "heldout_problems", "is_data_path", "load_or_train_tokenizer", "load_tokenizer",
    "pretraining_batches", "pretraining_documents",
    "rl_prompt_batches", "sft_batches", "task_dataset", "vocabulary_difference",
]
