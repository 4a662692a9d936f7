"""Input side of training: synthetic tasks, chat template, corpus, tokenizer, grain pipelines.

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
from r1jax.data.tokenizer import Tokenizer, load_or_train_tokenizer

__all__ = [
    "FieldMap", "HELDOUT", "SkippedRows", "TOKEN_KEYS", "TRAIN", "Tokenizer", "corpus_dataset",
    "corpus_example", "distinct_problems", "examples_of", "file_dataset", "format_completion",
    "format_example", "format_prompt", "is_data_path",
    "heldout_problems", "load_or_train_tokenizer", "pretraining_batches", "pretraining_documents",
    "rl_prompt_batches", "sft_batches", "task_dataset",
]
