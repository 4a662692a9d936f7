"""Reading a checkpoint's tokenizer files: what transformers does with the configs' flags and
legacy layouts (compared with `AutoTokenizer`), which implementation `load_tokenizer` picks, and
the errors that name the file and the field when something is missing or broken."""

import json
import shutil

import pytest
import tokenizers

from r1jax.data import HFTokenizer, Tokenizer, load_tokenizer
from tests.data import tokenizer_builders as builders

STRINGS = builders.varied_strings(150, seed=3)


@pytest.fixture(scope="module")
def r1_dir(tmp_path_factory):
    return builders.build_r1_style(tmp_path_factory.mktemp("r1"))


@pytest.fixture
def checkpoint(r1_dir, tmp_path):
    """A fresh copy of the R1-style directory and an editor of its JSON files."""
    directory = tmp_path / "ckpt"
    shutil.copytree(r1_dir, directory)

    def edit(name, change):
        path = directory / name
        value = json.loads(path.read_text()) if path.exists() else {}
        change(value)
        path.write_text(json.dumps(value, ensure_ascii=False))
    return directory, edit


def _assert_like_transformers(directory):
    from transformers import AutoTokenizer

    ours, ref = HFTokenizer(str(directory)), AutoTokenizer.from_pretrained(str(directory))
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (ref.bos_token_id, ref.eos_token_id, len(ref))
    for text in STRINGS:
        assert ours.encode(text, add_special_tokens=True) == ref.encode(text), text
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False), text
    return ours


@pytest.mark.parametrize("add_bos, add_eos", [(True, True), (False, True), (False, False), (None, None)])
@pytest.mark.parametrize("keep_post_processor", [True, False])
def test_tokenizer_json_post_processor_decides_special_tokens(checkpoint, add_bos, add_eos,
                                                               keep_post_processor):
    directory, edit = checkpoint
    for flag, value in (("add_bos_token", add_bos), ("add_eos_token", add_eos)):
        edit("tokenizer_config.json", lambda c, f=flag, v=value: c.pop(f) if v is None else c.update({f: v}))
    if not keep_post_processor:
        edit("tokenizer.json", lambda t: t.update(post_processor=None))
    ours = _assert_like_transformers(directory)
    ids = ours.encode("x", add_special_tokens=True)
    # tokenizer_config.json's add_bos_token / add_eos_token change nothing (transformers drops
    # them when tokenizer.json exists): the R1 post-processor adds bos, none adds nothing.
    assert (ids[0] == ours.bos_id, ids[-1] == ours.eos_id) == (keep_post_processor, False)


def _decodes_like_transformers(directory, texts):
    from transformers import AutoTokenizer

    ours, ref = HFTokenizer(str(directory)), AutoTokenizer.from_pretrained(str(directory))
    for text in texts:
        ids = ref.encode(text)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
    return ours


@pytest.mark.parametrize("flags", [{"split_special_tokens": True}, {"clean_up_tokenization_spaces": True}])
def test_config_flags_act_as_in_transformers(checkpoint, flags):
    directory, edit = checkpoint
    edit("tokenizer_config.json", lambda c: c.update(flags))
    ours = _assert_like_transformers(directory)
    _decodes_like_transformers(directory, [*STRINGS, "Hello , world . I 'm sure don 't"])
    if "split_special_tokens" in flags:  # guard: the tag is spelled out, not one token
        assert len(ours.encode(builders.R1_EOS)) > 1
    else:  # transformers skips the cleanup for BPE: spaces stay
        assert ours.decode(ours.encode("a , b")) == "a , b"


def test_space_cleanup_applies_to_wordpiece(tmp_path):
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(STRINGS + ["Hello, world. I'm sure you don't."] * 5, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[UNK]", "[SEP]"], show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="[SEP]", unk_token="[UNK]",
                            clean_up_tokenization_spaces=True).save_pretrained(str(tmp_path))
    ours = _decodes_like_transformers(tmp_path, [*STRINGS, "Hello, world. I'm sure you don't."])
    assert ours.decode(ours.encode("Hello, world.")) == "hello, world."  # guard: " ," was joined


def test_special_tokens_absent_from_the_vocabulary_are_added(checkpoint):
    directory, edit = checkpoint
    edit("tokenizer_config.json", lambda c: c.update(eos_token="<|brand_new_eos|>"))
    ours = _assert_like_transformers(directory)
    assert ours.eos_id == ours.vocab_size - 1 and ours.encode("a<|brand_new_eos|>")[-1] == ours.eos_id


def test_legacy_special_tokens_map_is_read(checkpoint):
    directory, edit = checkpoint

    def legacy(config):
        config.pop("added_tokens_decoder", None)
        config.pop("eos_token")
    edit("tokenizer_config.json", legacy)
    edit("special_tokens_map.json", lambda m: m.update(eos_token={"content": builders.R1_EOS}))
    assert _assert_like_transformers(directory).eos_id == HFTokenizer(str(directory)).piece_to_id(builders.R1_EOS)


def test_load_tokenizer_picks_the_implementation(tokenizer, r1_dir):
    assert isinstance(load_tokenizer(tokenizer.model_path), Tokenizer)
    assert isinstance(load_tokenizer(str(r1_dir)), HFTokenizer)
    assert isinstance(load_tokenizer(str(r1_dir / "tokenizer.json")), HFTokenizer)
    assert load_tokenizer(tokenizer.path).encode("12+3") == tokenizer.encode("12+3")


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer path .*nowhere does not exist"):
        load_tokenizer(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"empty/tokenizer\.json does not exist"):
        load_tokenizer(str((tmp_path / "empty").mkdir() or tmp_path / "empty"))
    with pytest.raises(ValueError, match="tokenizer path is empty"):
        load_tokenizer("")


@pytest.mark.parametrize("file, content, error, match", [
    ("tokenizer.json", "{not json", ValueError, r"ckpt/tokenizer\.json is not a tokenizers file"),
    ("tokenizer_config.json", '{"eos_token": ', ValueError,
     r"ckpt/tokenizer_config\.json is not valid JSON: line 1"),
    ("tokenizer_config.json", "[1, 2]", ValueError, r"tokenizer_config\.json must hold a JSON object"),
    ("tokenizer_config.json", '{"bos_token": null}', ValueError,
     r"ckpt/tokenizer_config\.json names no eos_token: .* set \"eos_token\""),
    ("tokenizer_config.json", '{"eos_token": 5}', ValueError,
     r"tokenizer_config\.json: eos_token=5 must be a string, null, or a dict with 'content'"),
    ("chat_template.jinja", "{% if messages %}", ValueError,
     r"ckpt/chat_template\.jinja does not compile: line 1"),
])
def test_broken_files_are_named(checkpoint, file, content, error, match):
    directory, _ = checkpoint
    (directory / file).write_text(content)
    with pytest.raises(error, match=match):
        load_tokenizer(str(directory))


def test_template_from_the_config_is_named_in_errors(checkpoint):
    directory, edit = checkpoint
    (directory / "chat_template.jinja").unlink()
    edit("tokenizer_config.json", lambda c: c.update(chat_template="{{ raise_exception('no system role') }}"))
    tok = load_tokenizer(str(directory))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json field chat_template failed to render 1 "
                                         r"messages: no system role"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])


def test_a_checkpoint_without_a_template_says_so(checkpoint):
    directory, _ = checkpoint
    (directory / "chat_template.jinja").unlink()
    tok = load_tokenizer(str(directory))
    assert tok.encode("hi")  # tokenizing needs no template
    with pytest.raises(ValueError, match=r"ckpt has no chat template: neither chat_template\.jinja nor a "
                                         r"chat_template field in tokenizer_config\.json"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_a_training_config_names_a_checkpoint_tokenizer(r1_dir, tmp_path):
    from r1jax.train.experiment import DataConfig
    from r1jax.train.supervised import shared_tokenizer

    tok = shared_tokenizer(str(tmp_path), DataConfig(tokenizer_path=str(r1_dir)))
    assert isinstance(tok, HFTokenizer) and tok.path == str(r1_dir)
    assert not list(tmp_path.iterdir())  # nothing trained in the workdir
