"""Audio checks and conversions shared by all corpus jobs.

Every corpus job reads its audio through :func:`load_audio` / :func:`check_audio_file`, so a missing,
unreadable or truncated file, a wrong sample rate or a bad transcription stops the job with an
error that names the file, instead of surfacing as a crash deep inside training.

Sample-rate policy (documented choice): corpus jobs take a :class:`SampleRatePolicy`. ``RESAMPLE``
(the default of the jobs that re-encode audio) converts any other rate to 16 kHz with sox's
very-high-quality resampler (``rate -v``, linear phase), falling back to an FFT resampler when sox
is not installed; ``REJECT`` raises :class:`AudioError`. Multi-channel audio is averaged to mono.
"""
from __future__ import annotations

import enum
import io
import logging
import os
import shutil
import subprocess
from typing import BinaryIO, Optional, Tuple, Union

import numpy as np

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Raised for audio that cannot be used (missing, unreadable, truncated, wrong sample rate)."""


class SampleRatePolicy(enum.Enum):
    """What to do with audio whose sample rate is not 16 kHz."""

    RESAMPLE = "resample"
    REJECT = "reject"


class AudioFormat(enum.Enum):
    """Container/codec written by the corpus jobs."""

    FLAC = "flac"
    OGG = "ogg"  # Ogg/Vorbis: lossy, about 5x smaller than FLAC

    @property
    def extension(self) -> str:
        return "." + self.value

    @property
    def soundfile_args(self) -> dict:
        if self is AudioFormat.FLAC:
            return {"format": "FLAC", "subtype": "PCM_16"}
        return {"format": "OGG", "subtype": "VORBIS"}


_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000)  # written by streaming encoders (espeak --stdout, sox -)


def _check_wav_length(f: BinaryIO, size: int, name: str) -> None:
    """A RIFF/WAVE file must hold the bytes its header declares (libsndfile reads a cut file silently)."""
    head = f.read(12)
    riff_size = int.from_bytes(head[4:8], "little")
    if riff_size not in _UNKNOWN_SIZES and 8 + riff_size > size:
        raise AudioError(f"audio {name} is truncated: its RIFF header declares {8 + riff_size} bytes, "
                         f"the file holds {size}")
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk = f.read(8)
        chunk_size = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"data":
            if chunk_size not in _UNKNOWN_SIZES and pos + 8 + chunk_size > size:
                raise AudioError(f"audio {name} is truncated: its header declares {chunk_size} bytes of samples, "
                                 f"the file holds {size - pos - 8}")
            return
        pos += 8 + chunk_size + (chunk_size & 1)
    raise AudioError(f"audio {name} is truncated: no complete data chunk in its {size} bytes")


def _check_ogg_length(f: BinaryIO, size: int, name: str) -> None:
    """Every page of an Ogg file must be complete and every logical stream must end with an end-of-stream page."""
    pos = 0
    open_streams = set()
    while pos < size:
        f.seek(pos)
        header = f.read(27)
        if len(header) < 27 or header[:4] != b"OggS":
            raise AudioError(f"audio {name} is truncated or corrupt: no Ogg page at byte {pos} of {size}")
        segments = f.read(header[26])
        if len(segments) < header[26]:
            raise AudioError(f"audio {name} is truncated: the Ogg page at byte {pos} is cut")
        end = pos + 27 + header[26] + sum(segments)
        if end > size:
            raise AudioError(f"audio {name} is truncated: the Ogg page at byte {pos} ends at {end}, "
                             f"the file holds {size} bytes")
        serial = header[14:18]
        if header[5] & 0x04:
            open_streams.discard(serial)
        else:
            open_streams.add(serial)
        pos = end
    if open_streams:
        raise AudioError(f"audio {name} is truncated: its Ogg stream ends without an end-of-stream page")


def check_container_length(source: Union[str, bytes], name: str) -> None:
    """Refuses WAV and Ogg data shorter than their headers say (FLAC is checked by its decoder)."""
    f: BinaryIO = open(source, "rb") if isinstance(source, str) else io.BytesIO(source)
    with f:
        magic = f.read(12)
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
            _check_wav_length(f, size, name)
        elif magic[:4] == b"OggS":
            _check_ogg_length(f, size, name)


def _flac_without_samples(source: Union[str, bytes]) -> bool:
    """True for a FLAC stream whose STREAMINFO block (always the first) declares 0 samples."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            head = f.read(42)
    else:
        head = source[:42]
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return False
    return int.from_bytes(head[18:26], "big") & 0xFFFFFFFFF == 0  # 36-bit total samples at STREAMINFO byte 10


def _decode(source: Union[str, bytes], name: str) -> Tuple[np.ndarray, int]:
    """Decodes a file path or encoded bytes to float32 samples [T] (mono) and the sample rate."""
    import soundfile as sf

    if isinstance(source, str) and not os.path.isfile(source):
        raise AudioError(f"audio file {name} does not exist")
    check_container_length(source, name)
    try:
        with sf.SoundFile(source if isinstance(source, str) else io.BytesIO(source)) as f:
            expected = f.frames
            sr = f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as exc:
        if _flac_without_samples(source):  # libsndfile calls that "Format not recognised"
            raise AudioError(f"audio {name} holds no samples (FLAC header without audio frames)") from exc
        raise AudioError(f"audio {name} is unreadable: {exc}") from exc
    if expected > 0 and data.shape[0] < expected:
        raise AudioError(f"audio {name} is truncated: read {data.shape[0]} of {expected} samples")
    if data.shape[0] == 0:
        raise AudioError(f"audio {name} holds no samples")
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"audio {name} holds non-finite samples")
    return np.ascontiguousarray(samples, dtype=np.float32), int(sr)


def resample(samples: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resamples float32 mono audio with sox ``rate -v`` (FFT resampling if sox is missing)."""
    if sr_in == sr_out:
        return samples
    sox = shutil.which("sox")
    if sox:
        cmd = [sox, "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sr_in), "-",
               "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-", "rate", "-v", str(sr_out)]
        proc = subprocess.run(cmd, input=samples.astype("<f4").tobytes(), capture_output=True, check=False)
        if proc.returncode == 0:
            return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
        logging.warning("sox resampling failed (%s), using FFT resampling", proc.stderr.decode(errors="replace"))
    n_out = int(round(len(samples) * sr_out / sr_in))
    spec = np.fft.rfft(samples)
    n_bins = n_out // 2 + 1
    if n_bins <= len(spec):
        spec = spec[:n_bins]
    else:
        spec = np.concatenate([spec, np.zeros(n_bins - len(spec), dtype=spec.dtype)])
    return (np.fft.irfft(spec, n_out) * (n_out / len(samples))).astype(np.float32)


def load_audio(
    source: Union[str, bytes],
    *,
    name: Optional[str] = None,
    policy: SampleRatePolicy = SampleRatePolicy.RESAMPLE,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Reads audio (a path or encoded bytes) as float32 mono at ``sample_rate``; errors name the file."""
    name = name or (source if isinstance(source, str) else "<bytes>")
    samples, sr = _decode(source, name)
    if sr != sample_rate:
        if policy is SampleRatePolicy.REJECT:
            raise AudioError(f"audio {name} has sample rate {sr} Hz, expected {sample_rate} Hz")
        samples = resample(samples, sr, sample_rate)
    return samples


def check_audio_file(path: str, *, sample_rate: int = SAMPLE_RATE) -> float:
    """Fully decodes a file to check it is readable, complete and at ``sample_rate``; returns its duration."""
    samples, sr = _decode(path, path)
    if sr != sample_rate:
        raise AudioError(f"audio {path} has sample rate {sr} Hz, expected {sample_rate} Hz")
    return len(samples) / sr


def write_audio(samples: np.ndarray, path: str, *, fmt: AudioFormat = AudioFormat.FLAC,
                sample_rate: int = SAMPLE_RATE) -> float:
    """Writes float32 mono audio (clipped to [-1, 1]) atomically; returns the duration in seconds."""
    import soundfile as sf

    tmp = path + ".tmp" + fmt.extension
    sf.write(tmp, np.clip(samples, -1.0, 1.0), sample_rate, **fmt.soundfile_args)
    os.replace(tmp, path)
    return len(samples) / sample_rate


def check_transcript(text: Union[str, bytes], *, where: str) -> str:
    """Returns the transcription with whitespace collapsed; empty or non-UTF-8 text raises naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: transcription is not valid UTF-8: {exc}") from exc
    if text is None or not isinstance(text, str):
        raise ValueError(f"{where}: transcription missing (got {text!r})")
    text = " ".join(text.split())
    if not text:
        raise ValueError(f"{where}: empty transcription")
    return text


def read_text_file(path: str) -> str:
    """Reads a UTF-8 text file; a non-UTF-8 file raises naming the file and the byte offset."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc


def map_parallel(fn, items: list, *, workers: int = 1, chunksize: int = 16) -> list:
    """``[fn(x) for x in items]`` in ``workers`` processes (in this process for 1 worker or few items).

    ``fn`` must be a picklable top-level function; its first exception propagates with its message.
    """
    if workers <= 1 or len(items) < 2 * chunksize:
        return [fn(x) for x in items]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=chunksize))


def task_workers(requested: int) -> int:
    """Worker processes for a task that asked for ``requested`` cpus, capped by the machine."""
    return max(1, min(int(requested), os.cpu_count() or 1))


def prepare_audio_file(args: Tuple[str, str, SampleRatePolicy]) -> Tuple[str, float]:
    """Checks one file; returns (usable path, duration). ``args = (path, resampled_path, policy)``.

    A 16 kHz file is used as it is; another rate is rejected or resampled to ``resampled_path`` (FLAC).
    """
    path, resampled_path, policy = args
    samples, sr = _decode(path, path)
    if sr == SAMPLE_RATE:
        return path, len(samples) / sr
    if policy is SampleRatePolicy.REJECT:
        raise AudioError(f"audio {path} has sample rate {sr} Hz, expected {SAMPLE_RATE} Hz")
    logging.info("resampling %s from %d Hz to %d Hz", path, sr, SAMPLE_RATE)
    os.makedirs(os.path.dirname(resampled_path), exist_ok=True)
    duration = write_audio(resample(samples, sr, SAMPLE_RATE), resampled_path)
    return resampled_path, duration
