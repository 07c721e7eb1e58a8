"""Label units on a few toy sentences: SentencePiece (unigram/BPE), characters, LLM tokenizer, conversions."""
import gzip
import json

import pytest

from sisyphus import tk

from llmasr.data.corpus import CorpusEntry, write_corpus
from llmasr.text.extract import ConcatenateTextJob, CorpusToTextJob
from llmasr.text.llm_tokenizer import ExportLlmVocabJob, TrainLlmTokenizerJob, load_tokenizer
from llmasr.text.sentencepiece import (
    ApplySentencePieceJob,
    SentencePieceOutput,
    SentencePieceType,
    TrainSentencePieceJob,
)
from llmasr.text.units import (
    AmUnits,
    LlmWordEncoder,
    UnitKind,
    am_ids_to_llm_ids,
    am_pieces_as_llm_tokens,
    llm_ids_to_am_ids,
)
from llmasr.text.vocab import CharacterVocabJob, ReturnnVocabJob, chars_to_text, read_vocab, text_to_chars

SENTENCES = [
    "AND GOD SAID LET THERE BE LIGHT", "AND THERE WAS LIGHT", "AND GOD SAW THE LIGHT THAT IT WAS GOOD",
    "AND GOD DIVIDED THE LIGHT FROM THE DARKNESS", "AND GOD CALLED THE LIGHT DAY", "THE DARKNESS HE CALLED NIGHT",
    "AND THE EVENING AND THE MORNING WERE THE FIRST DAY", "LET THE WATERS BRING FORTH ABUNDANTLY",
    "IT'S THE BROTHERS' HOUSE", "THE SPIRIT OF GOD MOVED UPON THE FACE OF THE WATERS",
]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "lm.txt.gz"
    with gzip.open(path, "wt") as f:
        for i in range(30):
            f.write(SENTENCES[i % len(SENTENCES)] + "\n")
    return tk.Path(str(path))


@pytest.fixture
def corpus_file(tmp_path):
    entries = [CorpusEntry(id=f"u{i}", audio=f"/nonexistent/u{i}.flac", duration=1.0, speaker="s",
                           text=s if i else "And God said, Let there be light.") for i, s in enumerate(SENTENCES)]
    path = str(tmp_path / "corpus.jsonl.gz")
    write_corpus(entries, path)
    return tk.Path(path)


@pytest.mark.parametrize("model_type", [SentencePieceType.UNIGRAM, SentencePieceType.BPE])
def test_train_and_apply_sentencepiece(text_file, corpus_file, run_job, model_type):
    train = TrainSentencePieceJob(text_file, vocab_size=60, model_type=model_type, hard_vocab_limit=False)
    apply_text = ApplySentencePieceJob(text_file, train.out_model)
    apply_ids = ApplySentencePieceJob(corpus_file, train.out_model, output=SentencePieceOutput.IDS, gzip_output=False)
    run_job(apply_text)
    run_job(apply_ids)
    vocab = read_vocab(train.out_vocab.get_path())
    assert len(vocab) == train.out_vocab_size.get() <= 60
    assert vocab[:3] == ["<unk>", "<s>", "</s>"]
    with gzip.open(apply_text.out_text.get_path(), "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == 30
    assert "".join(lines[0].split()).replace("\u2581", " ").strip() == SENTENCES[0]
    with open(apply_ids.out_text.get_path()) as f:
        id_lines = f.read().splitlines()
    units = AmUnits.from_sentencepiece_model(train.out_model.get_path())
    assert [units.ids_to_text(list(map(int, line.split()))) for line in id_lines[1:]] == SENTENCES[1:]
    assert units.words_to_ids(SENTENCES[3].split()) == list(map(int, id_lines[3].split()))


def test_sentencepiece_errors(tmp_path, run_job):
    with pytest.raises(TypeError, match="SentencePieceType"):
        TrainSentencePieceJob(tk.Path(str(tmp_path / "x")), vocab_size=10, model_type="unigram")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"GOOD LINE\nBAD \xff LINE\n")
    job = TrainSentencePieceJob(tk.Path(str(bad)), vocab_size=20, hard_vocab_limit=False)
    with pytest.raises(ValueError, match=r"bad.txt:2: not valid UTF-8"):
        run_job(job)
    assert not job._sis_finished()


def test_corpus_text_char_vocab_and_returnn_export(corpus_file, text_file, run_job):
    text = run_job(CorpusToTextJob([corpus_file], normalize=True))
    with gzip.open(text.out_text.get_path(), "rt") as f:
        assert f.read().splitlines() == SENTENCES
    assert text.out_num_lines.get() == 10
    merged = run_job(ConcatenateTextJob([text.out_text, text_file], deduplicate=True, max_lines=12))
    assert merged.out_num_lines.get() == 10  # the LM text repeats the same sentences
    chars = run_job(CharacterVocabJob(text.out_text))
    vocab = read_vocab(chars.out_vocab.get_path())
    assert vocab[:4] == ["<blank>", "<s>", "</s>", "<unk>"]
    assert set(vocab[4:]) == set("".join(SENTENCES).replace(" ", "")) | {"|"}
    counts = {c: sum(s.count(c) for s in SENTENCES) for c in vocab[5:]}
    assert vocab[4] == "|" and list(counts.values()) == sorted(counts.values(), reverse=True)  # by frequency
    ret = run_job(ReturnnVocabJob(chars.out_vocab, unknown_label="<unk>"))
    from returnn.datasets.util.vocabulary import Vocabulary

    rv = Vocabulary(ret.out_returnn_vocab.get_path(), unknown_label="<unk>")
    assert rv.num_labels == len(vocab) and rv.labels == vocab
    assert text_to_chars("AB C") == ["A", "B", "|", "C"] and chars_to_text(["A", "B", "|", "C"]) == "AB C"


def test_char_units_split_completed(corpus_file, run_job):
    text = CorpusToTextJob([corpus_file], normalize=True)
    chars = run_job(CharacterVocabJob(text.out_text))
    units = AmUnits.from_vocab_file(chars.out_vocab.get_path(), UnitKind.CHARACTERS)
    ids = units.words_to_ids(["LET", "THERE", "BE"])
    assert units.ids_to_text(ids) == "LET THERE BE"
    assert units.split_completed(ids) == (["LET", "THERE"], ids[-2:])
    assert units.split_completed(ids + [units.index["|"]]) == (["LET", "THERE", "BE"], [])
    blank = units.index["<blank>"]
    assert units.split_completed([blank] + ids[:3] + [blank]) == ([], ids[:3])
    with pytest.raises(ValueError, match="character 'x'"):
        units.words_to_ids(["x"])


def test_sentencepiece_split_completed_hand_made_vocab():
    u = AmUnits(["<blank>", "</s>", "\u2581LET", "\u2581THE", "RE", "\u2581", "B", "E"])
    # ▁LET ▁THE RE ▁ B E  -> LET, THERE complete; tail is the pieces of "BE"
    ids = [2, 3, 4, 5, 6, 7]
    assert u.split_completed(ids) == (["LET", "THERE"], [5, 6, 7])
    assert u.split_completed(ids, final=True) == (["LET", "THERE", "BE"], [])
    assert u.split_completed(ids + [1, 2]) == (["LET", "THERE", "BE"], [])  # </s> ends the sentence
    assert u.split_completed([0, 2, 0, 0, 3]) == (["LET"], [3])
    assert u.split_completed([]) == ([], [])
    with pytest.raises(ValueError, match="label id 8 outside"):
        u.split_completed([8])


def test_llm_tokenizer_and_conversions(text_file, run_job, tmp_path):
    train = TrainLlmTokenizerJob(text_file, vocab_size=300)
    export = run_job(ExportLlmVocabJob(train.out_tokenizer_dir))
    tok = load_tokenizer(train.out_tokenizer_dir)
    vocab = json.load(open(export.out_vocab_json.get_path()))
    assert len(vocab) == len(tok) == export.out_vocab_size.get() == train.out_vocab_size.get() <= 300
    assert vocab[0] == "<|endoftext|>" and export.out_special_ids.get()["eos"] == 0
    with open(export.out_vocab.get_path()) as f:
        assert len(f.read().split("\n")) == len(vocab) + 1
    enc = LlmWordEncoder(tok)
    words = SENTENCES[6].split()
    full = tok.encode(SENTENCES[6], add_special_tokens=False)
    # word-by-word encoding equals encoding the whole sentence, and extends incrementally
    assert enc.encode_words(words) == full
    assert enc.encode_words(words[:3]) + enc.encode_words(words[3:], first_index=3) == full
    assert enc.decode_words(full) == words
    # AM labels -> completed words -> LLM ids, and back
    am = AmUnits(["<blank>", "</s>"] + sorted({"\u2581" + w for s in SENTENCES for w in s.split()}))
    am_ids = [am.index["\u2581" + w] for w in words]
    assert am_ids_to_llm_ids(am, enc, am_ids, final=False) == enc.encode_words(words[:-1])
    assert am_ids_to_llm_ids(am, enc, am_ids) == full
    rows = am_pieces_as_llm_tokens(am, enc)
    assert rows[:2] == [[], []] and rows[am.index["\u2581GOD"]] == tok.encode(" GOD", add_special_tokens=False)
    with pytest.raises(FileNotFoundError, match="tokenizer directory /nonexistent/tok does not exist"):
        load_tokenizer("/nonexistent/tok")


def test_llm_ids_to_sentencepiece_ids(text_file, run_job):
    sp = run_job(TrainSentencePieceJob(text_file, vocab_size=60, hard_vocab_limit=False))
    tok = run_job(TrainLlmTokenizerJob(text_file, vocab_size=300))
    am = AmUnits.from_sentencepiece_model(sp.out_model.get_path())
    enc = LlmWordEncoder(load_tokenizer(tok.out_tokenizer_dir), lowercase=True)
    llm_ids = enc.encode_words(["and", "god", "said"])
    assert am.ids_to_text(llm_ids_to_am_ids(enc, am, llm_ids)) == "AND GOD SAID"
