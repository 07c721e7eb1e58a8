"""AM training throughput: the RETURNN training job vs. a bare PyTorch loop on the same model and data, and the
real-time factors of the RETURNN recognition jobs.

    .venv/bin/python bench/am_training.py [--utterances 200] [--epochs 2] [--threads 2] [--model ctc|aed]
        [--size tiny|toy] [--workdir DIR] [--keep]

Prints seconds of audio trained per wall-clock second for both loops and their ratio (RETURNN / bare; target
<= 1.1), counting from the first to the last training step (process start-up, data set-up and dev scoring
excluded; read from RETURNN's log), plus the whole RETURNN process time; then RTFx per search mode.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "recipe"), ROOT]


def make_data(workdir: str, utterances: int, threads: int):
    """Toy corpus (espeak-ng) -> OggZip train/dev + SentencePiece model, through the toolkit's jobs."""
    from sisyphus.toolkit import run_job

    from llmasr.data.returnn_data import PackOggZipJob
    from llmasr.data.toy import MakeToyCorpusJob
    from llmasr.text.extract import CorpusToTextJob
    from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

    corpus = run_job(MakeToyCorpusJob(num_train=utterances, num_dev=max(4, utterances // 10),
                                      num_test=4, cpu=threads))
    zips = {s: run_job(PackOggZipJob(corpus.out_corpora[s], name=s)).out_ogg_zip for s in ("train", "dev")}
    text = run_job(CorpusToTextJob([corpus.out_corpora["train"]])).out_text
    spm = run_job(TrainSentencePieceJob(text, vocab_size=256, model_type=SentencePieceType.UNIGRAM,
                                        hard_vocab_limit=False)).out_model
    return zips["train"], zips["dev"], spm


def model_config(kind: str, size: str):
    from llmasr.models.conformer import (AedModelConfig, ConformerEncoderConfig, CtcModelConfig,
                                         TransformerDecoderConfig, tiny_encoder_config)

    if size == "tiny":
        enc = tiny_encoder_config()
        dec = TransformerDecoderConfig(num_layers=1, dim=32, num_heads=2, ff_dim=64)
    else:  # the toy experiment's size
        enc = ConformerEncoderConfig(num_layers=6, dim=144, num_heads=4, ff_dim=576, conv_kernel_size=15,
                                     frontend_channels=16)
        dec = TransformerDecoderConfig(num_layers=2, dim=144, num_heads=4, ff_dim=576)
    if kind == "ctc":
        return CtcModelConfig(encoder=enc, aux_ctc_layers=(enc.num_layers // 2,), aux_ctc_scales=(0.3,))
    return AedModelConfig(encoder=enc, decoder=dec, aux_ctc_layers=(enc.num_layers,), aux_ctc_scales=(0.3,))


def returnn_times(log_path: str):
    """From RETURNN's log: the summed per-step times ('ep N train, step i, ..., <t> sec/step'), the number of
    steps, and the summed epoch training times ('Epoch N: Trained K steps, H:MM:SS elapsed', includes data loading)."""
    step_total, steps, epoch_total = 0.0, 0, 0.0
    with open(log_path, errors="replace") as f:
        for line in f:
            m = re.match(r"ep \d+ train, step \d+, .* ([0-9.]+) sec/step", line)
            if m:
                step_total += float(m.group(1))
                steps += 1
            m = re.match(r"Epoch \d+: Trained \d+ steps, (\d+):(\d\d):(\d\d) elapsed", line)
            if m:
                epoch_total += int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    return step_total, steps, epoch_total


def bare_loop(model_dict, train_zip, spm_model, opts, epochs: int, threads: int):
    """The same model, optimiser, batching (sorted by length, batch_size_seconds) on decoded audio, plain PyTorch."""
    import ast
    import io
    import zipfile

    import numpy as np
    import sentencepiece as spm
    import soundfile as sf
    import torch

    from llmasr.models.conformer import model_config_from_dict
    from llmasr.models.conformer_modules import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(opts.random_seed)
    model = build_model(model_config_from_dict(model_dict)).train()
    optim = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, eps=1e-8, weight_decay=opts.weight_decay,
                              fused=True)
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    name = os.path.splitext(os.path.basename(train_zip))[0]
    zf = zipfile.ZipFile(train_zip)
    entries = ast.literal_eval(zf.read(f"{name}.txt").decode("utf-8"))
    entries.sort(key=lambda e: e["duration"])
    batches, cur, cur_s = [], [], 0.0
    for e in entries:
        if cur and (cur_s + e["duration"] > opts.batch_size_seconds or len(cur) >= opts.max_seqs):
            batches.append(cur)
            cur, cur_s = [], 0.0
        cur.append(e)
        cur_s += e["duration"]
    if cur:
        batches.append(cur)
    audio_seconds, start = 0.0, time.perf_counter()
    for _ in range(epochs):
        rng = np.random.default_rng(0)
        for i in rng.permutation(len(batches)):
            batch = batches[i]
            wavs = [sf.read(io.BytesIO(zf.read(f"{name}/{e['file']}")), dtype="float32")[0] for e in batch]
            wavs = [w / max(1e-5, np.abs(w).max()) for w in wavs]  # peak normalisation, as in the RETURNN dataset
            lengths = torch.tensor([len(w) for w in wavs])
            audio = torch.zeros(len(wavs), int(lengths.max()))
            for j, w in enumerate(wavs):
                audio[j, : len(w)] = torch.from_numpy(w)
            ids = [sp.encode(e["text"]) for e in batch]
            tlen = torch.tensor([len(t) for t in ids])
            targets = torch.zeros(len(ids), int(tlen.max()), dtype=torch.long)
            for j, t in enumerate(ids):
                targets[j, : len(t)] = torch.tensor(t)
            losses = model.compute_losses(audio, lengths, targets, tlen)
            loss = sum(v * s for v, s in losses.values()) / tlen.sum()
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip_norm)
            optim.step()
            audio_seconds += float(lengths.sum()) / 16000
    return time.perf_counter() - start, audio_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["ctc", "aed"], default="ctc")
    ap.add_argument("--size", choices=["tiny", "toy"], default="toy")
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-search", action="store_true")
    args = ap.parse_args()

    import sisyphus.global_settings as gs
    from sisyphus.toolkit import run_job

    from llmasr.returnn.config import LearningRateSchedule, TrainingOptions
    from llmasr.returnn.forward import RecogMode, ReturnnForwardJob
    from llmasr.returnn.training import ReturnnTrainingJob, resolve_model_config, spm_vocab_size

    workdir = args.workdir or tempfile.mkdtemp(prefix="am_bench_")
    gs.BASE_DIR = workdir
    gs.WORK_DIR = os.path.join(workdir, "work")
    train_zip, dev_zip, spm = make_data(workdir, args.utterances, args.threads)

    cfg = model_config(args.model, args.size)
    opts = TrainingOptions(num_epochs=args.epochs, batch_size_seconds=args.batch_seconds, learning_rate=1e-3,
                           schedule=LearningRateSchedule.CONSTANT, torch_threads=args.threads)
    job = ReturnnTrainingJob(cfg, train_zip, dev_zip, spm, options=opts, cpu=args.threads)
    t0 = time.perf_counter()
    run_job(job)
    returnn_wall = time.perf_counter() - t0
    step_secs, steps, epoch_secs = returnn_times(os.path.join(job._sis_path("work", abspath=True), "returnn.log"))
    model_dict = resolve_model_config(cfg, spm_vocab_size(spm.get_path()))
    n_params = None
    bare_secs, audio_secs = bare_loop(model_dict, train_zip.get_path(), spm.get_path(), opts, args.epochs,
                                      args.threads)
    from llmasr.models.conformer import model_config_from_dict
    from llmasr.models.conformer_modules import build_model

    n_params = sum(p.numel() for p in build_model(model_config_from_dict(model_dict)).parameters())
    print(f"model {args.model}/{args.size}: {n_params / 1e6:.2f} M parameters, {args.threads} threads, "
          f"{audio_secs / args.epochs / 60:.1f} min of training audio per epoch, {args.epochs} epochs")
    print(f"bare PyTorch loop: {bare_secs:.1f} s, {audio_secs / bare_secs:.1f} s audio / s")
    print(f"RETURNN epochs (training loop incl. data loading, 1 s resolution): {epoch_secs:.0f} s, "
          f"{audio_secs / max(epoch_secs, 1e-9):.1f} s audio / s, overhead {epoch_secs / bare_secs:.2f}x")
    print(f"RETURNN summed step times ({steps} steps): {step_secs:.1f} s, {step_secs / bare_secs:.2f}x of the bare loop")
    print(f"RETURNN job total (incl. start-up, dataset set-up, dev scoring, checkpoints): {returnn_wall:.1f} s, "
          f"{returnn_wall / bare_secs:.2f}x")
    if not args.no_search:
        modes = [RecogMode.CTC_GREEDY, RecogMode.CTC_BEAM] + (
            [RecogMode.AED_BEAM, RecogMode.AED_CTC] if args.model == "aed" else [])
        for mode in modes:
            fwd = run_job(ReturnnForwardJob(job.out_last_checkpoint, job.out_model_config, dev_zip, spm, mode=mode,
                                            beam_size=4, nbest=4, cpu=args.threads))
            with open(fwd.out_search_stats.get_path()) as f:
                stats = json.load(f)
            print(f"search {mode.value}: {stats['audio_seconds']:.1f} s audio in {stats['decode_seconds']:.1f} s, "
                  f"RTFx {stats['audio_seconds'] / stats['decode_seconds']:.1f}")
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
