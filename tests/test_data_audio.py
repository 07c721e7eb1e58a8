"""Audio checks shared by the corpus jobs: decoding errors, sample-rate policy, resampling, transcripts."""
import os

import numpy as np
import pytest
import soundfile as sf

from llmasr.data import audio as audio_mod
from llmasr.data.audio import (
    AudioError,
    AudioFormat,
    SampleRatePolicy,
    check_audio_file,
    check_transcript,
    load_audio,
    map_parallel,
    resample,
    write_audio,
)


def sine(freq, sr, seconds=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32")


@pytest.mark.parametrize("use_sox", [True, False])
def test_resample_keeps_frequency_and_length(monkeypatch, use_sox):
    if not use_sox:
        monkeypatch.setattr(audio_mod.shutil, "which", lambda name: None)
    y = resample(sine(440, 44100), 44100, 16000)
    assert len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(440, abs=3)
    assert np.max(np.abs(y)) == pytest.approx(0.5, abs=0.05)


def test_load_audio_policy_stereo_and_bytes(tmp_path):
    path = str(tmp_path / "st.wav")
    x = sine(300, 8000)
    sf.write(path, np.stack([x, 0 * x], axis=1), 8000)
    y = load_audio(path)
    assert len(y) == 8000 and np.max(np.abs(y)) == pytest.approx(0.25, abs=0.03)  # channels averaged
    with pytest.raises(AudioError, match="st.wav has sample rate 8000 Hz, expected 16000 Hz"):
        load_audio(path, policy=SampleRatePolicy.REJECT)
    with open(path, "rb") as f:
        assert len(load_audio(f.read(), name="blob")) == 8000
    with pytest.raises(AudioError, match="audio blob is unreadable"):
        load_audio(b"not audio at all", name="blob")


def test_check_audio_file_errors(tmp_path):
    good = str(tmp_path / "good.flac")
    assert write_audio(sine(200, 16000), good) == pytest.approx(0.5)
    assert check_audio_file(good) == pytest.approx(0.5)
    ogg = str(tmp_path / "good.ogg")
    write_audio(sine(200, 16000), ogg, fmt=AudioFormat.OGG)
    assert sf.info(ogg).format == "OGG" and check_audio_file(ogg) == pytest.approx(0.5, abs=0.01)
    empty = str(tmp_path / "empty.flac")
    sf.write(empty, np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="empty.flac"):
        check_audio_file(empty)
    with pytest.raises(AudioError, match="missing.flac does not exist"):
        check_audio_file(str(tmp_path / "missing.flac"))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_check_transcript():
    assert check_transcript("  A  B\n", where="x") == "A B"
    assert check_transcript("CAF\u00c9".encode("utf-8"), where="x") == "CAF\u00c9"
    with pytest.raises(ValueError, match="f.txt:3: empty transcription"):
        check_transcript(" \t", where="f.txt:3")
    with pytest.raises(ValueError, match="f.txt:3: transcription is not valid UTF-8"):
        check_transcript(b"CAF\xc9", where="f.txt:3")
    with pytest.raises(ValueError, match="transcription missing"):
        check_transcript(None, where="row 1")


def test_map_parallel_uses_processes_and_keeps_order():
    items = [f"/a/b/{i}.flac" for i in range(64)]
    assert map_parallel(os.path.basename, items, workers=2, chunksize=4) == [f"{i}.flac" for i in range(64)]
