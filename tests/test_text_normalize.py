"""Training-target normalisation (LibriSpeech style) and the Open ASR Leaderboard scoring normaliser."""
import pytest

from llmasr.text.normalize import normalize_for_scoring, normalize_for_training, number_to_words


@pytest.mark.parametrize("text, expected", [
    ("And God said, Let there be light: and there was light.", "AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT"),
    ("It\u2019s the brothers' house -- 'Night,' he said", "IT'S THE BROTHERS' HOUSE NIGHT HE SAID"),
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9", "CAFE NAIVE RESUME"),
    ("In 1984 there were 10,000 men and 3 boys", "IN ONE THOUSAND NINE HUNDRED EIGHTY FOUR THERE WERE TEN THOUSAND MEN AND THREE BOYS"),
    ("well-known   (sic) ", "WELL KNOWN SIC"),
    ("?!", ""),
])
def test_normalize_for_training(text, expected):
    assert normalize_for_training(text) == expected
    assert normalize_for_training(expected) == expected  # idempotent


def test_number_to_words():
    assert number_to_words(0) == "ZERO"
    assert number_to_words(115) == "ONE HUNDRED FIFTEEN"
    assert number_to_words(2_000_019) == "TWO MILLION NINETEEN"
    with pytest.raises(ValueError, match="negative"):
        number_to_words(-1)


def test_normalize_for_scoring_matches_whisper_english_normaliser():
    assert normalize_for_scoring("Hello, Mr. Smith! I won't colour it.") == "hello mister smith i will not color it"
    assert normalize_for_scoring("twenty five dollars") == "$25"
    assert normalize_for_scoring("Um, [noise] the (inaudible) end") == "the end"
    assert normalize_for_scoring("HE HOPED THERE WOULD BE STEW") == normalize_for_scoring("he hoped there would be stew.")
