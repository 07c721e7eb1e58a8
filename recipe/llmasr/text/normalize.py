"""Text normalisation: LibriSpeech-style training targets, and the Open ASR Leaderboard normaliser for scoring.

Training targets (:func:`normalize_for_training`) follow LibriSpeech: upper-case letters A-Z, word-internal
apostrophes, single spaces; digits are spelled out, other symbols become word boundaries.
Scoring (:func:`normalize_for_scoring`) applies Whisper's ``EnglishTextNormalizer`` (with its British to
American spelling map), the normaliser the Open ASR Leaderboard scores with, to hypotheses and references.
"""
from __future__ import annotations

import functools
import re
import unicodedata

_ONES = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN", "ELEVEN",
         "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN", "SIXTEEN", "SEVENTEEN", "EIGHTEEN", "NINETEEN"]
_TENS = ["", "", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY"]
_SCALES = [(10**12, "TRILLION"), (10**9, "BILLION"), (10**6, "MILLION"), (1000, "THOUSAND"), (100, "HUNDRED")]


def number_to_words(n: int) -> str:
    """Spells a non-negative integer in upper-case English words (``125`` -> ``ONE HUNDRED TWENTY FIVE``)."""
    if n < 0:
        raise ValueError(f"number_to_words: negative number {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head = number_to_words(n // value) + " " + name
            return head if n % value == 0 else head + " " + number_to_words(n % value)
    raise AssertionError(n)


def _spell_digits(match: re.Match) -> str:
    digits = match.group(0)
    if len(digits) > 15:  # e.g. long ids: read digit by digit
        return " ".join(_ONES[int(d)] for d in digits)
    return " " + number_to_words(int(digits)) + " "


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize_for_training(text: str) -> str:
    """LibriSpeech-style transcription: ``"Let there be light: and there was light."`` -> ``"LET THERE BE LIGHT AND THERE WAS LIGHT"``."""
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"(?<=\d)[,.](?=\d{3}\b)", "", text)  # 10,000 -> 10000
    text = re.sub(r"\d+", _spell_digits, text)
    text = text.upper()
    text = re.sub(r"[^A-Z' ]+", " ", text)
    words = []
    for w in text.split():
        w = w.lstrip("'")
        # keep word-internal apostrophes, and a trailing one only for plural possessives (BROTHERS')
        if w.endswith("'") and not w.rstrip("'").endswith("S"):
            w = w.rstrip("'")
        w = re.sub(r"''+", "'", w)
        if w.strip("'"):
            words.append(w)
    return " ".join(words)


@functools.lru_cache(maxsize=1)
def _scoring_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_for_scoring(text: str) -> str:
    """The Open ASR Leaderboard normalisation (Whisper's English normaliser with its spelling map), stripped."""
    return _scoring_normalizer()(text).strip()
