"""The embedded toy corpus: short King James Bible clauses spoken by espeak-ng, in LibriSpeech layout.

A toy analogue of LibriSpeech: train/dev/test utterances with disjoint sentences (and disjoint source
verses), several synthetic speakers (espeak-ng voice + variant + pitch + speed), a test set spoken
only with voice settings never seen in training, and a much larger text-only corpus (the clauses of
all verses not used for dev/test) playing the role of LibriSpeech's LM text.
"""
from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import random
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sisyphus import tk

from llmasr.data.audio import check_audio_file
from llmasr.data.corpus import CorpusEntry, write_corpus
from llmasr.data.corpus_job import ParallelCorpusJob
from llmasr.text.normalize import normalize_for_training

SPLITS = ("train", "dev", "test")
BIBLE_RANGE = "gen1:1-rev22:21"


@dataclasses.dataclass(frozen=True)
class ToySpeaker:
    """A synthetic speaker: espeak-ng voice and variant, base speed (words/min) and pitch (0-99)."""

    id: int
    voice: str
    variant: str
    speed: int
    pitch: int

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


# Voice settings heard in train and dev.
TRAIN_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029")
TRAIN_VARIANTS = ("", "m1", "m3", "f2", "f3")
TRAIN_SPEED = (140, 180)
TRAIN_PITCH = (35, 65)
# Voice settings heard only in test: other accents, other variants, speeds and pitches outside the train range.
TEST_VOICES = ("en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc")
TEST_VARIANTS = ("m7", "f4", "f5")
TEST_SPEEDS = ((120, 135), (185, 200))
TEST_PITCHES = ((20, 32), (68, 80))
# Voice settings of the dev set of unseen voices (:class:`MakeToyUnseenVoicesJob`): test's kind of voices (its accents,
# at speeds and pitches outside the train range) with variants heard in neither training nor test, so that choices
# made on dev carry over to test. (A fifth accent, en-gb-x-gbcwmd, with these variants did not predict test.)
DEV_VOICES = TEST_VOICES
DEV_VARIANTS = ("Andy", "john", "max", "belinda", "steph", "Annie")


def make_speakers(seed: int, train_variants: Sequence[str] = TRAIN_VARIANTS) -> Dict[str, List[ToySpeaker]]:
    """Speakers per split: train/dev share the train voice settings (each train voice with each of
    ``train_variants``); test uses only unseen ones. The speakers of variants beyond :data:`TRAIN_VARIANTS` are drawn
    after the test speakers, so that adding training variants leaves the other speakers' settings as they were."""
    shared = sorted(set(train_variants) & set(TEST_VARIANTS))
    if shared:
        raise ValueError(f"toy corpus: train_variants {shared} are test-only variants (test: {TEST_VARIANTS})")
    if not train_variants:
        raise ValueError("toy corpus: train_variants is empty")
    rng = random.Random(seed)

    def train_settings(variants: Sequence[str]) -> List[Tuple[str, str, int, int]]:
        return [(voice, variant, rng.randint(*TRAIN_SPEED), rng.randint(*TRAIN_PITCH))
                for voice in TRAIN_VOICES for variant in variants]

    train = train_settings([v for v in train_variants if v in TRAIN_VARIANTS])
    test = []
    for voice in TEST_VOICES:
        for variant in TEST_VARIANTS:
            test.append((voice, variant, rng.randint(*rng.choice(TEST_SPEEDS)), rng.randint(*rng.choice(TEST_PITCHES))))
    train += train_settings([v for v in train_variants if v not in TRAIN_VARIANTS])
    speakers = {"train": [], "dev": [], "test": []}
    next_id = 100
    for split, settings in (("train", train), ("dev", train), ("test", test)):
        for voice, variant, speed, pitch in settings:
            speakers[split].append(ToySpeaker(next_id, voice, variant, speed, pitch))
            next_id += 1
    return speakers


def make_unseen_speakers(seed: int, voices: Sequence[str], variants: Sequence[str], first_id: int) -> List[ToySpeaker]:
    """One speaker per voice and variant, each at a speed and pitch drawn from the test ranges (outside training's)."""
    rng = random.Random(seed)
    speakers = []
    for voice in voices:
        for variant in variants:
            speed = rng.randint(*rng.choice(TEST_SPEEDS))
            speakers.append(ToySpeaker(first_id + len(speakers), voice, variant, speed,
                                       rng.randint(*rng.choice(TEST_PITCHES))))
    return speakers


def read_verses(text_file: Optional[str] = None) -> List[Tuple[int, str]]:
    """(book index, verse text) pairs from ``bible -f`` (or a file in that format: ``Ge1:1 In the beginning ...``)."""
    if text_file is None:
        bible = shutil.which("bible")
        if bible is None:
            raise FileNotFoundError("program 'bible' not found: install the Debian packages bible-kjv and bible-kjv-text")
        out = subprocess.run([bible, "-f", BIBLE_RANGE], capture_output=True, check=True)
        lines = out.stdout.decode("utf-8", errors="strict").splitlines()
        source = f"bible -f {BIBLE_RANGE}"
    else:
        from llmasr.data.audio import read_text_file

        lines = read_text_file(text_file).splitlines()
        source = text_file
    verses = []
    books: Dict[str, int] = {}
    ref = re.compile(r"^(\S*?)(\d+):(\d+)\s+(.*)$")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = ref.match(line)
        if m:
            book, text = m.group(1) or "?", m.group(4)
        else:  # plain text: one verse per line, all in one book
            book, text = "", line
        books.setdefault(book, len(books) + 1)
        verses.append((books[book], text.strip()))
    if not verses:
        raise ValueError(f"{source}: no verses found")
    return verses


def split_clauses(text: str, *, min_words: int = 3, max_words: int = 15) -> List[str]:
    """Splits a verse at punctuation into normalised clauses of ``min_words``..``max_words`` words.

    Short pieces are merged with the next one; longer ones are cut into even chunks.
    """
    pieces = [normalize_for_training(p) for p in re.split(r"[,.;:?!()]+", text)]
    pieces = [p.split() for p in pieces if p]
    merged: List[List[str]] = []
    cur: List[str] = []
    for words in pieces:
        cur = cur + words
        if len(cur) >= min_words:
            merged.append(cur)
            cur = []
    if cur:
        if merged and len(merged[-1]) + len(cur) <= max_words:
            merged[-1] = merged[-1] + cur
        else:
            merged.append(cur)
    clauses = []
    for words in merged:
        n_chunks = -(-len(words) // max_words)
        size = -(-len(words) // n_chunks)
        for i in range(0, len(words), size):
            chunk = words[i : i + size]
            if min_words <= len(chunk) <= max_words:
                clauses.append(" ".join(chunk))
    return clauses


def common_words(verses: Sequence[Tuple[int, str]], size: int, *, min_words: int, max_words: int) -> set:
    """The ``size`` most frequent words over all clauses of ``verses`` (ties broken alphabetically): the toy's
    closed vocabulary, the analogue of a corpus whose words are mostly seen in training."""
    if size <= 0:
        raise ValueError(f"toy corpus: vocabulary_size must be positive, got {size}")
    counts: Dict[str, int] = {}
    for _, text in verses:
        for clause in split_clauses(text, min_words=min_words, max_words=max_words):
            for w in clause.split():
                counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return set(ranked[:size])


@dataclasses.dataclass
class ToyUtterance:
    """One utterance to synthesise."""

    split: str
    speaker: ToySpeaker
    chapter: int
    index: int
    text: str
    speed: int
    pitch: int

    @property
    def id(self) -> str:
        return f"{self.speaker.id}-{self.chapter}-{self.index:04d}"


def spoken_by(speaker: ToySpeaker, split: str, chapter: int, index: int, text: str,
              rng: random.Random) -> ToyUtterance:
    """``text`` as one utterance of ``speaker``, at the speaker's speed and pitch with a small random jitter."""
    speed = max(80, speaker.speed + rng.randint(-8, 8))
    pitch = min(99, max(0, speaker.pitch + rng.randint(-4, 4)))
    return ToyUtterance(split, speaker, chapter, index, text, speed, pitch)


def plan_corpus(
    verses: Sequence[Tuple[int, str]],
    *,
    num_train: int,
    num_dev: int,
    num_test: int,
    min_words: int,
    max_words: int,
    seed: int,
    train_variants: Sequence[str] = TRAIN_VARIANTS,
    vocabulary_size: Optional[int] = None,
) -> Tuple[Dict[str, List[ToyUtterance]], List[str]]:
    """Chooses sentences and speakers per split and the LM text; dev/test verses never reach train or LM text.

    With ``vocabulary_size``, only clauses made of the ``vocabulary_size`` most frequent words are used (all splits
    and the LM text alike)."""
    rng = random.Random(seed)
    vocab = (common_words(verses, vocabulary_size, min_words=min_words, max_words=max_words)
             if vocabulary_size is not None else None)

    def in_vocab(clause: str) -> bool:
        return vocab is None or all(w in vocab for w in clause.split())

    speakers = make_speakers(seed, train_variants)
    order = list(range(len(verses)))
    rng.shuffle(order)
    used: set = set()
    chosen: Dict[str, List[Tuple[int, str]]] = {s: [] for s in SPLITS}
    held_out_verses: set = set()
    wanted = {"dev": num_dev, "test": num_test, "train": num_train}
    pos = 0
    for split in ("dev", "test", "train"):  # dev/test first: their verses are then excluded from train and LM
        while len(chosen[split]) < wanted[split]:
            if pos >= len(order):
                raise ValueError(f"toy corpus: not enough text for {wanted[split]} {split} sentences")
            v = order[pos]
            pos += 1
            book, text = verses[v]
            if split != "train":
                held_out_verses.add(v)
            for c in split_clauses(text, min_words=min_words, max_words=max_words):
                if c not in used and len(chosen[split]) < wanted[split] and in_vocab(c):
                    chosen[split].append((book, c))
                used.add(c)  # remaining clauses of a dev/test verse are dropped, not reused
    held_out_text = {c for s in ("dev", "test") for _, c in chosen[s]}
    lm_text = []
    for v, (_, text) in enumerate(verses):
        if v in held_out_verses:
            continue
        for c in split_clauses(text, min_words=min_words, max_words=max_words):
            if c not in held_out_text and in_vocab(c):
                lm_text.append(c)
    plan: Dict[str, List[ToyUtterance]] = {}
    for split in SPLITS:
        counters: Dict[Tuple[int, int], int] = {}
        utts = []
        for i, (book, text) in enumerate(chosen[split]):
            spk = speakers[split][i % len(speakers[split])] if split != "train" else rng.choice(speakers[split])
            key = (spk.id, book)
            idx = counters.get(key, 0)
            counters[key] = idx + 1
            utts.append(spoken_by(spk, split, book, idx, text, rng))
        plan[split] = utts
    return plan, lm_text


def synthesize(text: str, out_path: str, *, voice: str, speed: int, pitch: int) -> None:
    """Speaks ``text`` with espeak-ng and writes 16 kHz 16-bit mono audio (format from the extension) via sox."""
    tmp = out_path + ".tmp" + os.path.splitext(out_path)[1]
    espeak = subprocess.Popen(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    sox = subprocess.run(
        ["sox", "-D", "-G", "-t", "wav", "-", "-r", "16000", "-c", "1", "-b", "16", tmp],
        stdin=espeak.stdout, capture_output=True, check=False,
    )
    espeak.stdout.close()
    espeak_err = espeak.stderr.read()
    espeak.stderr.close()
    if espeak.wait() != 0 or sox.returncode != 0:
        raise RuntimeError(
            f"synthesis of {out_path} failed (voice {voice}, speed {speed}, pitch {pitch}): "
            f"espeak-ng: {espeak_err.decode(errors='replace')} sox: {sox.stderr.decode(errors='replace')}"
        )
    os.replace(tmp, out_path)


def synthesize_corpus(utts: Sequence[ToyUtterance], audio_root: str, *, workers: int = 1) -> List[CorpusEntry]:
    """Synthesises utterances into ``audio_root/<spk>/<chapter>/<id>.flac`` with ``*.trans.txt`` files.

    espeak-ng and sox run as subprocesses, ``workers`` at a time (threads only wait on them).
    """
    for u in utts:
        os.makedirs(os.path.join(audio_root, str(u.speaker.id), str(u.chapter)), exist_ok=True)

    def work(u: ToyUtterance) -> CorpusEntry:
        path = os.path.join(audio_root, str(u.speaker.id), str(u.chapter), u.id + ".flac")
        synthesize(u.text, path, voice=u.speaker.espeak_voice, speed=u.speed, pitch=u.pitch)
        duration = check_audio_file(path)
        return CorpusEntry(id=u.id, audio=os.path.abspath(path), duration=round(duration, 6),
                           speaker=str(u.speaker.id), text=u.text)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        entries = list(pool.map(work, utts))
    chapters: Dict[Tuple[str, int], List[ToyUtterance]] = {}
    for u in utts:
        chapters.setdefault((str(u.speaker.id), u.chapter), []).append(u)
    for (spk, chapter), us in chapters.items():
        trans = os.path.join(audio_root, spk, str(chapter), f"{spk}-{chapter}.trans.txt")
        with open(trans + ".tmp", "w", encoding="utf-8") as f:
            for u in sorted(us, key=lambda x: x.index):
                f.write(f"{u.id} {u.text}\n")
        os.replace(trans + ".tmp", trans)
    return entries


def write_lm_text(sentences: Iterable[str], path: str) -> int:
    """Writes one sentence per line to a gzipped text file atomically; returns the line count."""
    tmp = path + ".tmp.gz"
    n = 0
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for s in sentences:
            f.write(s + "\n")
            n += 1
    os.replace(tmp, path)
    return n


class MakeToyCorpusJob(ParallelCorpusJob):
    """Synthesises the toy corpus (train/dev/test manifests + audio in LibriSpeech layout) and its LM text."""

    __sis_hash_exclude__ = {"train_variants": TRAIN_VARIANTS, "vocabulary_size": None}

    def __init__(
        self,
        *,
        num_train: int = 3000,
        num_dev: int = 200,
        num_test: int = 200,
        min_words: int = 3,
        max_words: int = 15,
        seed: int = 1,
        verses_file: Optional[tk.Path] = None,
        train_variants: Sequence[str] = TRAIN_VARIANTS,
        vocabulary_size: Optional[int] = None,
        cpu: int = 2,
    ):
        """
        :param num_train: number of training utterances (one distinct sentence each)
        :param num_dev: number of dev utterances (voice settings seen in training)
        :param num_test: number of test utterances (voice settings never seen in training)
        :param min_words: shortest sentence in words
        :param max_words: longest sentence in words
        :param seed: seed of sentence, speaker, speed and pitch choices
        :param verses_file: text in ``bible -f`` format (``Ge1:1 text``) or one verse per line;
            None runs ``bible -f gen1:1-rev22:21`` (Debian bible-kjv)
        :param train_variants: espeak-ng voice variants of the train/dev speakers (each with every train accent);
            more variants make the unseen test voices easier to generalise to; test-only variants are refused
        :param vocabulary_size: use only sentences made of the text's ``vocabulary_size`` most frequent words (None:
            all): a closed vocabulary, so that errors come from the voices rather than from words unheard in training
        :param cpu: parallel synthesis processes (also the task's cpu requirement)
        """
        self.num_train = num_train
        self.num_dev = num_dev
        self.num_test = num_test
        self.min_words = min_words
        self.max_words = max_words
        self.seed = seed
        self.verses_file = verses_file
        self.train_variants = tuple(train_variants)
        self.vocabulary_size = vocabulary_size
        self.cpu = cpu
        make_speakers(seed, self.train_variants)  # a bad variant list fails when the graph is built

        self.out_audio_dir = self.output_path("LibriSpeech", directory=True)
        self.out_corpora = {s: self.output_path(f"{s}.corpus.jsonl.gz") for s in SPLITS}
        self.out_lm_text = self.output_path("lm_text.txt.gz")
        self.out_speakers = self.output_path("speakers.txt")
        self.out_num_lm_sentences = self.output_var("num_lm_sentences")
        self.rqmt = {"cpu": cpu, "mem": 2, "time": 2}

    def run(self):
        start = time.time()
        verses = read_verses(self.verses_file.get_path() if self.verses_file is not None else None)
        plan, lm_text = plan_corpus(
            verses, num_train=self.num_train, num_dev=self.num_dev, num_test=self.num_test,
            min_words=self.min_words, max_words=self.max_words, seed=self.seed, train_variants=self.train_variants,
            vocabulary_size=self.vocabulary_size,
        )
        root = self.out_audio_dir.get_path()
        os.makedirs(root, exist_ok=True)
        workers = max(1, min(self.run_threads(), os.cpu_count() or 1))
        for split in SPLITS:
            entries = synthesize_corpus(plan[split], os.path.join(root, split), workers=workers)
            n = write_corpus(entries, self.out_corpora[split].get_path())
            logging.info("toy corpus %s: %d utterances, %.1f s audio", split, n, sum(e.duration for e in entries))
        with open(self.out_speakers.get_path(), "w") as f:
            for split in SPLITS:
                for spk in sorted({u.speaker for u in plan[split]}, key=lambda s: s.id):
                    f.write(f"{split} {spk.id} {spk.espeak_voice} speed={spk.speed} pitch={spk.pitch}\n")
        n_lm = write_lm_text(lm_text, self.out_lm_text.get_path())
        self.out_num_lm_sentences.set(n_lm)
        logging.info("toy corpus done in %.1f s; %d LM sentences", time.time() - start, n_lm)


def read_speakers(path: str, split: str = "train") -> List[ToySpeaker]:
    """The speakers of ``split`` from a :class:`MakeToyCorpusJob`'s ``speakers.txt``
    (``<split> <id> <voice>[+<variant>] speed=<wpm> pitch=<p>`` per line)."""
    speakers = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                name, spk_id, voice = fields[0], int(fields[1]), fields[2]
                opts = dict(field.split("=", 1) for field in fields[3:])
                speed, pitch = int(opts["speed"]), int(opts["pitch"])
            except (IndexError, KeyError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: not a speaker line ({e!r}): {line.strip()!r}") from None
            if name == split:
                base, _, variant = voice.partition("+")
                speakers.append(ToySpeaker(spk_id, base, variant, speed, pitch))
    if not speakers:
        raise ValueError(f"{path}: no {split} speakers")
    return speakers


def plan_extra_utterances(sentences: Sequence[str], exclude: Iterable[str], speakers: Sequence[ToySpeaker], *,
                          num_utterances: int, seed: int, chapter: int) -> List[ToyUtterance]:
    """``num_utterances`` distinct sentences not in ``exclude``, each spoken by a random one of ``speakers`` with the
    same per-utterance speed and pitch jitter as the corpus; all in ``chapter`` (unique ids beside the corpus)."""
    excluded = set(exclude)
    pool = sorted({s for s in sentences if s and s not in excluded})
    if len(pool) < num_utterances:
        raise ValueError(f"toy corpus: {num_utterances} extra sentences wanted, only {len(pool)} available")
    rng = random.Random(seed)
    chosen = rng.sample(pool, num_utterances)
    counters: Dict[int, int] = {}
    utts = []
    for text in chosen:
        spk = rng.choice(speakers)
        idx = counters.get(spk.id, 0)
        counters[spk.id] = idx + 1
        utts.append(spoken_by(spk, "train", chapter, idx, text, rng))
    return utts


class MakeToyExtraTrainJob(ParallelCorpusJob):
    """More training utterances, spoken by the corpus's training voices, with sentences from its LM text that are not
    in its training set (the LM text never holds dev/test verses).

    More sentences for the encoder at the same number of steps (the toy trains it on them), or data for the models
    trained on a frozen encoder's stored outputs only (``ExperimentData.frames_train_zips``): on utterances the encoder
    never trained on, its outputs are as imperfect as on dev, so the decoders learn to cope with that."""

    def __init__(self, lm_text: tk.Path, train_corpus: tk.Path, speakers: tk.Path, *, num_utterances: int,
                 seed: int = 1, chapter: int = 1000, cpu: int = 2):
        """
        :param lm_text: sentences to draw from (:attr:`MakeToyCorpusJob.out_lm_text`)
        :param train_corpus: the training corpus whose sentences are left out
        :param speakers: :attr:`MakeToyCorpusJob.out_speakers`; its train speakers speak the new utterances
        :param num_utterances: how many
        :param seed: seed of sentence, speaker, speed and pitch choices
        :param chapter: the chapter number of all new utterances (the corpus's chapters are its books, 1-66)
        :param cpu: parallel synthesis processes (also the task's cpu requirement)
        """
        if num_utterances <= 0:
            raise ValueError(f"MakeToyExtraTrainJob: num_utterances must be positive, got {num_utterances}")
        self.lm_text = lm_text
        self.train_corpus = train_corpus
        self.speakers = speakers
        self.num_utterances = num_utterances
        self.seed = seed
        self.chapter = chapter
        self.cpu = cpu
        self.out_audio_dir = self.output_path("LibriSpeech", directory=True)
        self.out_corpus = self.output_path("train.corpus.jsonl.gz")
        self.rqmt = {"cpu": cpu, "mem": 2, "time": 2}

    def run(self):
        from llmasr.data.corpus import iter_corpus
        from llmasr.text.sentencepiece import iter_text_lines

        start = time.time()
        sentences = list(iter_text_lines(self.lm_text.get_path()))
        train_text = (e.text for e in iter_corpus(self.train_corpus.get_path()))
        utts = plan_extra_utterances(sentences, train_text, read_speakers(self.speakers.get_path()),
                                     num_utterances=self.num_utterances, seed=self.seed, chapter=self.chapter)
        root = os.path.join(self.out_audio_dir.get_path(), "train-extra")
        os.makedirs(root, exist_ok=True)
        entries = synthesize_corpus(utts, root, workers=max(1, min(self.run_threads(), os.cpu_count() or 1)))
        write_corpus(entries, self.out_corpus.get_path())
        logging.info("toy extra train: %d utterances, %.1f s audio, in %.1f s", len(entries),
                     sum(e.duration for e in entries), time.time() - start)


def check_unseen(speakers: Sequence[ToySpeaker], train: Sequence[ToySpeaker], test: Sequence[ToySpeaker],
                 what: str) -> None:
    """Refuses ``speakers`` with an accent or a variant heard in ``train``, a variant of ``test`` (the same voice
    as a test speaker, bar speed and pitch), or an id of either."""
    accents = sorted({s.voice for s in speakers} & {t.voice for t in train})
    variants = sorted({s.variant for s in speakers} & {h.variant for h in list(train) + list(test)})
    ids = sorted({s.id for s in speakers} & {h.id for h in list(train) + list(test)})
    if accents or variants or ids:
        raise ValueError(f"{what}: voices must be unheard in the corpus's training and differ from its test voices; "
                         f"training accents {accents}, training or test variants {variants}, speaker ids {ids}")


class MakeToyUnseenVoicesJob(ParallelCorpusJob):
    """A corpus's sentences spoken again by voices heard in neither its training nor its test set.

    The toy's dev set: its corpus dev set is spoken by the training voices, so choices made on it (augmentation,
    training voices, fusion scales) need not carry over to the test set's unseen voices. Re-speaking the dev sentences
    (already held out of training and LM text) with voices of test's kind (by default test's accents, at speeds and
    pitches outside the training range) but variants heard nowhere else gives a dev set that is unseen in the same way
    as test, as LibriSpeech's dev and test sets hold different new speakers, without touching test."""

    def __init__(self, corpus: tk.Path, speakers: tk.Path, *, voices: Sequence[str] = DEV_VOICES,
                 variants: Sequence[str] = DEV_VARIANTS, seed: int = 1, first_speaker_id: int = 900,
                 chapter: int = 2000, cpu: int = 2):
        """
        :param corpus: the corpus whose sentences are spoken again (:attr:`MakeToyCorpusJob.out_corpora` ``["dev"]``)
        :param speakers: :attr:`MakeToyCorpusJob.out_speakers`; a training accent, a training or test variant, or an id
            of its speakers in ``voices`` / ``variants`` / the new ids is refused
        :param voices: espeak-ng accents of the new speakers
        :param variants: espeak-ng variants of the new speakers (each with every accent)
        :param seed: seed of the speakers' speeds and pitches and of the per-utterance jitter
        :param first_speaker_id: id of the first new speaker (the others follow)
        :param chapter: the chapter number of all utterances
        :param cpu: parallel synthesis processes (also the task's cpu requirement)
        """
        if not voices or not variants:
            raise ValueError(f"MakeToyUnseenVoicesJob: voices {voices!r} and variants {variants!r} must not be empty")
        self.corpus = corpus
        self.speakers = speakers
        self.voices = tuple(voices)
        self.variants = tuple(variants)
        self.seed = seed
        self.first_speaker_id = first_speaker_id
        self.chapter = chapter
        self.cpu = cpu
        self.out_audio_dir = self.output_path("LibriSpeech", directory=True)
        self.out_corpus = self.output_path("corpus.jsonl.gz")
        self.out_speakers = self.output_path("speakers.txt")
        self.rqmt = {"cpu": cpu, "mem": 2, "time": 1}

    def run(self):
        from llmasr.data.corpus import iter_corpus

        start = time.time()
        new = make_unseen_speakers(self.seed, self.voices, self.variants, self.first_speaker_id)
        path = self.speakers.get_path()
        check_unseen(new, read_speakers(path, "train"), read_speakers(path, "test"), type(self).__name__)
        rng = random.Random(self.seed)
        utts = []
        for i, entry in enumerate(iter_corpus(self.corpus.get_path())):
            spk = new[i % len(new)]
            utts.append(spoken_by(spk, "dev", self.chapter, i // len(new), entry.text, rng))
        if not utts:
            raise ValueError(f"{self.corpus.get_path()}: no utterances to speak again")
        entries = synthesize_corpus(utts, os.path.join(self.out_audio_dir.get_path(), "dev-unseen"),
                                    workers=max(1, min(self.run_threads(), os.cpu_count() or 1)))
        write_corpus(entries, self.out_corpus.get_path())
        with open(self.out_speakers.get_path(), "w") as f:
            for spk in new:
                f.write(f"dev {spk.id} {spk.espeak_voice} speed={spk.speed} pitch={spk.pitch}\n")
        logging.info("toy dev of unseen voices: %d utterances, %.1f s audio, in %.1f s", len(entries),
                     sum(e.duration for e in entries), time.time() - start)
