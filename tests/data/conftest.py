"""The session tokenizer's work directory, for tests of the tokenizer cache."""

import os

import pytest


@pytest.fixture(scope="session")
def tokenizer_workdir(tokenizer):
    return os.path.dirname(tokenizer.model_path)
