"""The espeak-ng toy corpus: layout, counts, durations, disjoint splits, unseen test and dev voices, LM text."""
import gzip
import os
import re
import shutil

import pytest
import soundfile as sf

from llmasr.data.corpus import read_corpus
from llmasr.data.toy import (TEST_PITCHES, TEST_SPEEDS, TRAIN_VARIANTS, TRAIN_VOICES, MakeToyCorpusJob,
                             MakeToyExtraTrainJob, MakeToyUnseenVoicesJob, ToySpeaker, check_unseen, common_words,
                             make_speakers, make_unseen_speakers, plan_corpus, plan_extra_utterances, read_speakers,
                             read_verses, split_clauses, synthesize)
from llmasr.text.normalize import normalize_for_training

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="needs espeak-ng and sox")


def test_split_clauses_lengths_and_normalisation():
    verse = ("And God said, Let there be light: and there was light. And God saw the light, that it was good: "
             "and God divided the light from the darkness; and he called it 'Night,' 10 times over.")
    clauses = split_clauses(verse, min_words=3, max_words=6)
    assert clauses[:3] == ["AND GOD SAID", "LET THERE BE LIGHT", "AND THERE WAS LIGHT"]
    assert "AND HE CALLED IT NIGHT" in clauses  # quotes dropped, short pieces merged
    for c in clauses:
        assert 3 <= len(c.split()) <= 6
        assert c == normalize_for_training(c)
        assert all(ch.isupper() or ch in " '" for ch in c)
    assert "TEN TIMES OVER" in " ".join(clauses)


def test_plan_keeps_dev_test_out_of_train_and_lm_text():
    verses = read_verses()
    assert len(verses) == 31102
    plan, lm = plan_corpus(verses, num_train=300, num_dev=50, num_test=50, min_words=3, max_words=15, seed=3)
    texts = {s: [u.text for u in plan[s]] for s in plan}
    assert [len(texts[s]) for s in ("train", "dev", "test")] == [300, 50, 50]
    for s in texts:
        assert len(set(texts[s])) == len(texts[s])
    held_out = set(texts["dev"]) | set(texts["test"])
    assert not held_out & set(texts["train"])
    assert not set(texts["dev"]) & set(texts["test"])
    assert not held_out & set(lm)
    assert set(texts["train"]) <= set(lm)
    assert len(lm) > 50000
    # test voices never appear in training
    train_settings = {(u.speaker.voice, u.speaker.variant) for u in plan["train"]}
    test_settings = {(u.speaker.voice, u.speaker.variant) for u in plan["test"]}
    assert not train_settings & test_settings
    assert {u.speaker.voice for u in plan["test"]}.isdisjoint({u.speaker.voice for u in plan["train"]})
    assert all(not 140 - 8 <= u.speaker.speed <= 180 + 8 for u in plan["test"])
    # ids are unique over the whole corpus
    ids = [u.id for s in plan for u in plan[s]]
    assert len(ids) == len(set(ids))


def test_closed_vocabulary_keeps_every_sentence_inside_it():
    verses = read_verses()
    vocab = common_words(verses, 1000, min_words=3, max_words=15)
    assert len(vocab) == 1000 and {"THE", "AND", "LORD"} <= vocab
    plan, lm = plan_corpus(verses, num_train=300, num_dev=50, num_test=50, min_words=3, max_words=15, seed=3,
                           vocabulary_size=1000)
    texts = [u.text for s in plan for u in plan[s]] + lm
    assert all(w in vocab for t in texts for w in t.split())
    assert len(lm) > 30000  # still a large LM text
    open_plan, open_lm = plan_corpus(verses, num_train=300, num_dev=50, num_test=50, min_words=3, max_words=15, seed=3)
    assert any(w not in vocab for t in open_lm for w in t.split())
    with pytest.raises(ValueError, match="vocabulary_size"):
        common_words(verses, 0, min_words=3, max_words=15)


def test_speakers_are_deterministic():
    assert make_speakers(5) == make_speakers(5)
    assert make_speakers(5) != make_speakers(6)


def test_train_variants_widen_the_train_speakers_and_keep_test_unseen():
    wide = make_speakers(5, ("", "m1", "m2", "f1"))
    assert {s.variant for s in wide["train"]} == {"", "m1", "m2", "f1"}
    assert len(wide["train"]) == 4 * len(TRAIN_VOICES)
    assert {(s.voice, s.variant) for s in wide["test"]} == {(s.voice, s.variant) for s in make_speakers(5)["test"]}
    # added variants leave the settings of the default ones and of the test speakers as they were
    default = make_speakers(5)
    settings = {split: [(s.voice, s.variant, s.speed, s.pitch) for s in spk] for split, spk in default.items()}
    wider = make_speakers(5, TRAIN_VARIANTS + ("m2", "f1"))
    assert [(s.voice, s.variant, s.speed, s.pitch) for s in wider["test"]] == settings["test"]
    assert [(s.voice, s.variant, s.speed, s.pitch) for s in wider["train"]][: len(default["train"])] == \
        settings["train"]
    assert len(wider["train"]) == len(default["train"]) + 2 * len(TRAIN_VOICES)
    with pytest.raises(ValueError, match="m7"):
        MakeToyCorpusJob(num_train=4, num_dev=1, num_test=1, train_variants=("m1", "m7"))
    # the default keeps the job id of corpora made before the parameter existed
    assert MakeToyCorpusJob(num_train=5, num_dev=1, num_test=1).job_id() == \
        MakeToyCorpusJob(num_train=5, num_dev=1, num_test=1, train_variants=TRAIN_VARIANTS).job_id()
    assert MakeToyCorpusJob(num_train=5, num_dev=1, num_test=1).job_id() != \
        MakeToyCorpusJob(num_train=5, num_dev=1, num_test=1, train_variants=("m1",)).job_id()


def test_make_toy_corpus_job(run_job):
    job = run_job(MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=7))
    corpora = {s: read_corpus(p.get_path()) for s, p in job.out_corpora.items()}
    assert {s: len(c) for s, c in corpora.items()} == {"train": 12, "dev": 4, "test": 4}
    root = job.out_audio_dir.get_path()
    for split, entries in corpora.items():
        for e in entries:
            assert os.path.isabs(e.audio) and e.audio.startswith(os.path.join(root, split))
            spk, chapter, _ = e.id.split("-")
            assert e.audio.endswith(f"/{spk}/{chapter}/{e.id}.flac") and e.speaker == spk
            info = sf.info(e.audio)
            assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
            assert abs(info.duration - e.duration) < 1e-3
            # roughly 2..4 words per second of synthetic speech
            assert 0.15 < e.duration / len(e.text.split()) < 1.2, (e.text, e.duration)
            trans = os.path.join(os.path.dirname(e.audio), f"{spk}-{chapter}.trans.txt")
            with open(trans) as f:
                assert f"{e.id} {e.text}\n" in f.read()
    texts = {s: {e.text for e in c} for s, c in corpora.items()}
    assert not texts["train"] & (texts["dev"] | texts["test"])
    with gzip.open(job.out_lm_text.get_path(), "rt") as f:
        lm = f.read().splitlines()
    assert len(lm) == job.out_num_lm_sentences.get() > 50000
    assert not (texts["dev"] | texts["test"]) & set(lm)
    # a second job with the same arguments is the same job (hash), another seed a different one
    assert MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=7) is job
    assert MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=7, cpu=1) is job  # cpu is not hashed
    assert MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=8) is not job


def test_synthesis_is_bit_reproducible(tmp_path):
    """No dither in the 16-bit conversion: the same sentence and voice give the same samples every time, so a toy run
    from an empty work/ hears exactly the audio of the last one."""
    paths = [str(tmp_path / f"{i}.flac") for i in range(2)]
    for path in paths:
        synthesize("the quiet river runs", path, voice="en-us", speed=170, pitch=50)
    a, b = (sf.read(p, dtype="int16")[0] for p in paths)
    assert len(a) > 8000 and (a == b).all()


def test_extra_train_utterances_are_new_sentences_by_training_voices(run_job):
    """The decoders' extra training data: sentences of the LM text that the corpus did not train on, spoken only by
    the corpus's training speakers (so test voices stay unseen), with ids that do not clash with the corpus."""
    corpus = MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=7)
    run_job(corpus)
    speakers = read_speakers(corpus.out_speakers.get_path())
    assert speakers and set(speakers) <= set(make_speakers(7)["train"])  # those that speak a training utterance
    extra = run_job(MakeToyExtraTrainJob(corpus.out_lm_text, corpus.out_corpora["train"], corpus.out_speakers,
                                         num_utterances=6, seed=3))
    entries = read_corpus(extra.out_corpus.get_path())
    train = read_corpus(corpus.out_corpora["train"].get_path())
    held_out = {e.text for s in ("dev", "test") for e in read_corpus(corpus.out_corpora[s].get_path())}
    with gzip.open(corpus.out_lm_text.get_path(), "rt") as f:
        lm = set(f.read().splitlines())
    assert len(entries) == len({e.text for e in entries}) == 6
    assert all(e.text in lm for e in entries)
    assert not {e.text for e in entries} & ({e.text for e in train} | held_out)
    assert {e.speaker for e in entries} <= {str(s.id) for s in speakers}
    assert not {e.id for e in entries} & {e.id for s in corpus.out_corpora.values() for e in read_corpus(s.get_path())}
    for e in entries:
        assert sf.info(e.audio).samplerate == 16000 and e.duration > 0.3


def test_extra_train_plan_and_speaker_file_errors(tmp_path):
    spk = [ToySpeaker(100, "en-us", "m1", 150, 50), ToySpeaker(101, "en-gb", "", 170, 40)]
    utts = plan_extra_utterances(["A B C", "D E F", "G H I", "A B C", ""], ["D E F"], spk, num_utterances=2, seed=1,
                                 chapter=1000)
    assert sorted(u.text for u in utts) == ["A B C", "G H I"] and {u.chapter for u in utts} == {1000}
    assert all(abs(u.speed - u.speaker.speed) <= 8 and abs(u.pitch - u.speaker.pitch) <= 4 for u in utts)
    assert utts == plan_extra_utterances(["A B C", "D E F", "G H I"], ["D E F"], spk, num_utterances=2, seed=1,
                                         chapter=1000)
    with pytest.raises(ValueError, match="3 extra sentences wanted, only 2"):
        plan_extra_utterances(["A B C", "D E F", "G H I"], ["D E F"], spk, num_utterances=3, seed=1, chapter=1000)
    bad = tmp_path / "speakers.txt"
    bad.write_text("train 100 en-us+m1 speed=150 pitch=50\ntrain 101 en-gb speed=fast pitch=40\n")
    with pytest.raises(ValueError, match="speakers.txt:2: not a speaker line"):
        read_speakers(str(bad))
    bad.write_text("test 100 en-us+m7 speed=120 pitch=20\n")
    with pytest.raises(ValueError, match="no train speakers"):
        read_speakers(str(bad))
    with pytest.raises(ValueError, match="num_utterances must be positive"):
        MakeToyExtraTrainJob(None, None, None, num_utterances=0)


def test_dev_of_unseen_voices_respeaks_the_dev_sentences_with_voices_unheard_in_train_and_test(run_job):
    """The toy's dev set: the corpus's dev sentences, in order, each spoken by a voice of test's kind (a test accent,
    at a speed and pitch outside the training range) with a variant heard in neither train nor test."""
    corpus = MakeToyCorpusJob(num_train=12, num_dev=4, num_test=4, seed=7)
    run_job(corpus)
    job = run_job(MakeToyUnseenVoicesJob(corpus.out_corpora["dev"], corpus.out_speakers, voices=("en-us-nyc",),
                                         variants=("john", "belinda", "Annie"), seed=2))
    dev = read_corpus(corpus.out_corpora["dev"].get_path())
    entries = read_corpus(job.out_corpus.get_path())
    assert [e.text for e in entries] == [e.text for e in dev]
    assert len({e.speaker for e in entries}) == 3
    new = read_speakers(job.out_speakers.get_path(), "dev")
    assert {s.espeak_voice for s in new} == {"en-us-nyc+john", "en-us-nyc+belinda", "en-us-nyc+Annie"}
    train = read_speakers(corpus.out_speakers.get_path(), "train")
    test = read_speakers(corpus.out_speakers.get_path(), "test")
    assert not {s.voice for s in new} & {t.voice for t in train}
    assert not {s.variant for s in new} & {h.variant for h in train + test}
    for s in new:
        assert any(lo <= s.speed <= hi for lo, hi in TEST_SPEEDS) and any(lo <= s.pitch <= hi for lo, hi in TEST_PITCHES)
    for e, d in zip(entries, dev):
        assert e.id != d.id and sf.info(e.audio).samplerate == 16000 and e.duration > 0.3
    assert make_unseen_speakers(2, ("en-us-nyc",), ("john", "belinda", "Annie"), 900) == new

    with pytest.raises(ValueError, match=r"training accents \['en-us'\], training or test variants \['m1'\]"):
        run_job(MakeToyUnseenVoicesJob(corpus.out_corpora["dev"], corpus.out_speakers, voices=("en-us",),
                                       variants=("m1",)))
    with pytest.raises(ValueError, match="must not be empty"):
        MakeToyUnseenVoicesJob(corpus.out_corpora["dev"], corpus.out_speakers, variants=())


def test_check_unseen_refuses_a_training_accent_a_heard_variant_or_an_id():
    train = [ToySpeaker(100, "en-us", "m1", 150, 50)]
    test = [ToySpeaker(130, "en-gb-x-rp", "f4", 190, 70)]
    check_unseen([ToySpeaker(900, "en-gb-x-rp", "john", 120, 20)], train, test, "dev")  # a test accent is fine
    for bad, field in ((ToySpeaker(900, "en-us", "john", 120, 20), "training accents ['en-us']"),
                       (ToySpeaker(900, "en-gb-x-rp", "m1", 120, 20), "training or test variants ['m1']"),
                       (ToySpeaker(900, "en-gb-x-gbcwmd", "f4", 120, 20), "training or test variants ['f4']"),
                       (ToySpeaker(130, "en-gb-x-gbcwmd", "john", 120, 20), "speaker ids [130]")):
        with pytest.raises(ValueError, match=re.escape(field)):
            check_unseen([bad], train, test, "dev")


def test_verses_file_errors(tmp_path, run_job):
    bad = tmp_path / "verses.txt"
    bad.write_bytes(b"Ge1:1 In the beginning \xff\xfe\n")
    with pytest.raises(ValueError, match="verses.txt: not valid UTF-8"):
        read_verses(str(bad))
    small = tmp_path / "small.txt"
    small.write_text("Ge1:1 In the beginning God created the heaven and the earth.\n")
    from sisyphus import tk

    job = MakeToyCorpusJob(num_train=5, num_dev=1, num_test=1, verses_file=tk.Path(str(small)))
    with pytest.raises(ValueError, match="not enough text"):
        run_job(job)
    assert not job._sis_finished()


def test_toy_corpus_to_returnn_zip_and_units(run_job):
    """The embedded pipeline's data stage: toy corpus -> OggZipDataset, transcriptions -> SentencePiece."""
    from returnn.datasets.audio import OggZipDataset

    from llmasr.data.returnn_data import PackOggZipJob
    from llmasr.text.extract import ConcatenateTextJob, CorpusToTextJob
    from llmasr.text.sentencepiece import TrainSentencePieceJob
    from llmasr.text.units import AmUnits

    toy = MakeToyCorpusJob(num_train=14, num_dev=3, num_test=3, seed=2)
    pack = PackOggZipJob(toy.out_corpora["dev"], name="dev")
    lm = ConcatenateTextJob([toy.out_lm_text], max_lines=2000)
    spm = TrainSentencePieceJob(lm.out_text, vocab_size=300)
    train_text = CorpusToTextJob([toy.out_corpora["train"]])
    run_job(pack)
    run_job(spm)
    run_job(train_text)
    dev = read_corpus(toy.out_corpora["dev"].get_path())
    ds = OggZipDataset(path=pack.out_ogg_zip.get_path(), audio={"features": "raw", "sample_rate": 16000},
                       targets=None)
    ds.initialize()
    ds.init_seq_order(epoch=1)
    ds.load_seqs(0, 3)
    by_id = {e.id: e for e in dev}
    for i in range(3):
        e = by_id[ds.get_tag(i)]
        assert ds.get_data(i, "data").shape[0] == round(e.duration * 16000)
        assert bytes(ds.get_data(i, "orth").astype("uint8")).decode() == e.text
    units = AmUnits.from_sentencepiece_model(spm.out_model.get_path())
    with gzip.open(train_text.out_text.get_path(), "rt") as f:
        lines = f.read().splitlines()
    assert len(lines) == 14
    for line in lines:
        assert units.ids_to_text(units.words_to_ids(line.split())) == line
