"""One tokenizer per test session, trained on the embedded corpus (about a second)."""

import pytest

from r1jax.data import tokenizer as tokenizer_lib


@pytest.fixture(scope="session")
def tokenizer_workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_workdir):
    return tokenizer_lib.load_or_train_tokenizer(tokenizer_workdir)
