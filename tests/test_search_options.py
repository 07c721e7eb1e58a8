"""One meaning per search option: grouped options hash as the arguments they stand for, the joint CTC weight means
the same in both joint searches, the AM score of an N-best entry is the one asked for."""
import pytest

from sisyphus import tk

from llmasr.search.nbest import am_score
from llmasr.search.options import CtcBeam, GroupedOptions, LabelSyncBeam, TimeSyncOptions, hashed_arguments
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob, SpeechLLMSearchMode


def test_groups_hash_as_their_fields():
    args = hashed_arguments({"corpus": "c", "beam": CtcBeam(beam_size=4), "device": "cpu"})
    assert args == {"corpus": "c", "beam_size": 4, "label_topk": None, "nbest": 8, "device": "cpu"}
    # the maximum output length is hashed as before its rename: labels per 100 ms
    assert hashed_arguments({"beam": LabelSyncBeam(max_labels_per_second=5.0)})["max_len_ratio"] == 0.5
    with pytest.raises(ValueError, match="repeats the job arguments"):
        hashed_arguments({"beam_size": 3, "beam": CtcBeam()})
    assert isinstance(TimeSyncOptions(), GroupedOptions)


def test_speech_llm_recog_job_id_as_with_separate_arguments():
    paths = [tk.Path(f"/x/{n}") for n in ("ckpt", "setup.json", "corpus.jsonl.gz")]
    job = SpeechLLMRecogJob(*paths, mode=SpeechLLMSearchMode.JOINT_TIME_SYNC, ctc_scale=0.2,
                            beam=LabelSyncBeam(beam_size=4, nbest=4), time_sync=TimeSyncOptions(soft_collapse_threshold=0.8))
    flat = dict(checkpoint=paths[0], setup=paths[1], corpus=paths[2], mode=SpeechLLMSearchMode.JOINT_TIME_SYNC,
                ctc_logprobs=None, ctc_scale=0.2, beam_size=4, nbest=4, length_norm_exponent=1.0, max_len_ratio=1.0,
                label_topk=8, soft_collapse_threshold=0.8, utterances_per_batch=8, device="cpu", cpu=2,
                length_norm_counts_eos=False, score_new_labels_only=True, batch_hyps=True)
    assert job.job_id().rsplit(".", 1)[1] == super(SpeechLLMRecogJob, SpeechLLMRecogJob).hash(flat)


@pytest.mark.parametrize("mode, scale, ok", [
    (SpeechLLMSearchMode.JOINT_LABEL_SYNC, 0.0, True),  # the speech LLM alone, through the joint search
    (SpeechLLMSearchMode.JOINT_TIME_SYNC, 0.0, False),  # CTC at weight 0 cannot lead a search over its frames
    (SpeechLLMSearchMode.JOINT_TIME_SYNC, 0.3, True),
    (SpeechLLMSearchMode.JOINT_LABEL_SYNC, 1.0, False),
])
def test_ctc_scale_is_one_interpolation_weight(mode, scale, ok):
    paths = [tk.Path(f"/x/{n}") for n in ("ckpt", "setup.json", "corpus.jsonl.gz")]
    if ok:
        SpeechLLMRecogJob(*paths, mode=mode, ctc_scale=scale)
    else:
        with pytest.raises(ValueError, match="ctc_scale of"):
            SpeechLLMRecogJob(*paths, mode=mode, ctc_scale=scale)


def test_am_score_is_the_named_score_or_an_error():
    hyp = {"text": "a", "scores": {"ctc": -3.0, "lm": -1.0}}
    assert am_score(hyp, "ctc", "utt") == -3.0
    with pytest.raises(ValueError, match="utt.*no 'am' score"):
        am_score(hyp, "am", "utt")
