"""Corpus manifest -> RETURNN data: an OggZipDataset zip (and an HDF of raw samples for HDFDataset).

OggZipDataset layout: ``<name>.zip`` holding ``<name>.txt`` (a Python-literal list of dicts with
``file``, ``seq_name``, ``text``, ``duration``) and the audio files under ``<name>/``. Audio is stored
without zip compression (FLAC/OGG are compressed already) so that RETURNN reads it fast.
"""
from __future__ import annotations

import logging
import os
import zipfile
from typing import Optional

from sisyphus import Task, tk

from llmasr.data.audio import AudioFormat, check_audio_file, load_audio, write_audio
from llmasr.data.corpus import iter_corpus, utterance_file_name
from llmasr.resources import ResourceJob


def pack_ogg_zip(corpus_path: str, zip_path: str, *, audio_format: Optional[AudioFormat] = None) -> int:
    """Writes the OggZipDataset zip for a manifest; returns the number of sequences.

    :param audio_format: re-encode audio to this format; None stores the files as they are
    """
    name = os.path.splitext(os.path.basename(zip_path))[0]
    tmp = zip_path + ".tmp"
    entries = []
    seen = set()
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for e in iter_corpus(corpus_path):
            if e.id in seen:
                raise ValueError(f"{corpus_path}: duplicate utterance id {e.id!r}")
            seen.add(e.id)
            if not e.text.strip():
                raise ValueError(f"{corpus_path}: empty transcription for utterance {e.id!r}")
            if audio_format is None:
                if not os.path.isfile(e.audio):
                    raise FileNotFoundError(f"{corpus_path}: audio file {e.audio} of utterance {e.id!r} is missing")
                member = utterance_file_name(e.id, os.path.splitext(e.audio)[1])
                zf.write(e.audio, f"{name}/{member}")
            else:
                member = utterance_file_name(e.id, audio_format.extension)
                scratch = zip_path + ".scratch" + audio_format.extension
                write_audio(load_audio(e.audio), scratch, fmt=audio_format)
                zf.write(scratch, f"{name}/{member}")
                os.unlink(scratch)
            entries.append({"file": member, "seq_name": e.id, "text": e.text, "duration": float(e.duration)})
        if not entries:
            raise ValueError(f"{corpus_path}: corpus is empty")
        txt = "[\n" + "".join(f"{d!r},\n" for d in entries) + "]\n"
        zf.writestr(f"{name}.txt", txt.encode("utf-8"), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, zip_path)
    return len(entries)


class PackOggZipJob(ResourceJob):
    """Packs a corpus manifest into a RETURNN OggZipDataset zip (``out_ogg_zip``)."""

    def __init__(self, corpus: tk.Path, *, audio_format: Optional[AudioFormat] = None, name: str = "data"):
        """
        :param corpus: corpus manifest (``corpus.jsonl.gz``)
        :param audio_format: re-encode the audio (e.g. OGG to save space); None copies the files
        :param name: zip name, also the name of the ``.txt`` and the audio folder inside
        """
        self.corpus = corpus
        self.audio_format = audio_format
        self.name = name
        self.out_ogg_zip = self.output_path(f"{name}.zip")
        self.out_num_seqs = self.output_var("num_seqs")
        self.rqmt = {"cpu": 1, "mem": 2, "time": 4}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        n = pack_ogg_zip(self.corpus.get_path(), self.out_ogg_zip.get_path(), audio_format=self.audio_format)
        self.out_num_seqs.set(n)
        logging.info("packed %d sequences into %s", n, self.out_ogg_zip.get_path())


class PackRawAudioHdfJob(ResourceJob):
    """Writes raw 16 kHz samples ([T, 1] float32) and the transcriptions (``orth`` as UTF-8 bytes) to an HDF.

    For RETURNN's HDFDataset when audio decoding during training is too slow (small corpora only:
    samples are stored uncompressed).
    """

    def __init__(self, corpus: tk.Path):
        """
        :param corpus: corpus manifest
        """
        self.corpus = corpus
        self.out_hdf = self.output_path("data.hdf")
        self.rqmt = {"cpu": 1, "mem": 4, "time": 4}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import numpy as np
        from returnn.datasets.hdf import SimpleHDFWriter

        out = self.out_hdf.get_path()
        tmp = out + ".tmp.hdf"
        writer = SimpleHDFWriter(tmp, dim=1, ndim=2, extra_type={"orth": (256, 1, "uint8")})
        try:
            for e in iter_corpus(self.corpus.get_path()):
                check_audio_file(e.audio)
                samples = load_audio(e.audio)
                orth = np.frombuffer(e.text.encode("utf-8"), dtype=np.uint8)
                writer.insert_batch(
                    samples[None, :, None], seq_len=[len(samples)], seq_tag=[e.id],
                    extra={"orth": orth[None, :]},
                )
        finally:
            writer.close()
        os.replace(tmp, out)
