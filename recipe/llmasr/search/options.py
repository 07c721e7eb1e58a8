"""Search options grouped into small frozen dataclasses, so that a search job takes a few named groups instead of a
long list of keywords (``CTCFusionSearchJob(..., scales=FusionScales(lm_scale=0.5), beam=CtcBeam(beam_size=16))``).

A job hashes each group as the separate keyword arguments it took before the grouping
(:func:`hashed_arguments`), so grouping changes no job id.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional, Union

from sisyphus import tk

Scale = Union[float, tk.Variable]
DEFAULT_DELAY = 5  # frames between LLM calls of delayed fusion (the search's and the job's default)


class GroupedOptions:
    """Base of the option groups: the fields are job arguments of their own in the hash. ``_HASH_DEFAULTS`` maps fields
    added later to their defaults: at the default they stay out of the hash (as with
    :class:`llmasr.hash_defaults.HashDefaults`), so jobs hashed before them keep their ids."""

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {}

    def hashed_fields(self) -> Dict[str, Any]:
        """The group as the job arguments it stands for (name -> value); by default its fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self._HASH_DEFAULTS or getattr(self, f.name) != self._HASH_DEFAULTS[f.name]}


def hashed_arguments(parsed_args: Dict[str, Any]) -> Dict[str, Any]:
    """A job's parsed arguments with every :class:`GroupedOptions` value replaced by its fields (for ``hash()``)."""
    out: Dict[str, Any] = {}
    for name, value in parsed_args.items():
        if isinstance(value, GroupedOptions):
            fields = value.hashed_fields()
            clash = sorted(set(fields) & (set(parsed_args) | set(out)))
            if clash:
                raise ValueError(f"option group {name!r} repeats the job arguments {clash}")
            out.update(fields)
        else:
            out[name] = value
    return out


@dataclasses.dataclass(frozen=True)
class FusionScales(GroupedOptions):
    """Weights of the knowledge sources that join the AM in shallow fusion (floats or Variables, e.g. the outputs of
    :class:`llmasr.tuning.scales.TuneScalesJob`, read when the job runs).

    :param lm_scale: LLM weight
    :param prior_scale: label-prior weight (subtracted; needs a prior)
    :param length_reward: reward per label
    """

    lm_scale: Scale = 0.3
    prior_scale: Scale = 0.0
    length_reward: Scale = 0.0


@dataclasses.dataclass(frozen=True)
class CtcBeam(GroupedOptions):
    """The time-synchronous CTC prefix beam.

    :param beam_size: hypotheses kept per frame
    :param label_topk: labels tried per hypothesis and frame, the best by CTC (None: ``beam_size``)
    :param nbest: hypotheses written per utterance
    :param delayed_beam_size: delayed fusion only: hypotheses kept by CTC (and the LLM scores so far) between two LLM
        calls; each call then prunes to ``beam_size``. A wider CTC-only beam keeps the hypotheses that the LLM would
        have preferred at the frames it did not see, at the same number of LLM calls (None: ``beam_size``)
    """

    beam_size: int = 8
    label_topk: Optional[int] = None
    nbest: int = 8
    delayed_beam_size: Optional[int] = None

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"delayed_beam_size": None}

    def __post_init__(self):
        if self.delayed_beam_size is not None and self.delayed_beam_size < self.beam_size:
            raise ValueError(f"CtcBeam.delayed_beam_size ({self.delayed_beam_size}) must be >= beam_size "
                             f"({self.beam_size})")


@dataclasses.dataclass(frozen=True)
class CtcOutputs(GroupedOptions):
    """What a file of CTC outputs holds.

    :param blank: blank index (None: the last output)
    :param logprobs_are_logits: the file holds logits (log_softmax is applied first)
    :param frame_shift: seconds per CTC frame (audio duration where no corpus gives it)
    """

    blank: Optional[int] = None
    logprobs_are_logits: bool = False
    frame_shift: float = 0.06


@dataclasses.dataclass(frozen=True)
class LabelSyncBeam(GroupedOptions):
    """The label-synchronous beam of an attention decoder or a speech LLM.

    :param beam_size: hypotheses per utterance; :param nbest: hypotheses written per utterance
    :param length_norm_exponent: ended hypotheses are ranked by score / L^alpha (0: off)
    :param length_norm_counts_eos: L counts the EOS label (the paper's normalisation)
    :param max_labels_per_second: hypotheses end after this many labels per second of audio
    """

    beam_size: int = 8
    nbest: int = 8
    length_norm_exponent: float = 1.0
    length_norm_counts_eos: bool = False
    max_labels_per_second: float = 10.0

    def hashed_fields(self) -> Dict[str, Any]:
        """As the job arguments before the grouping: the maximum length as ``max_len_ratio``, labels per 100 ms."""
        fields = super().hashed_fields()
        fields["max_len_ratio"] = fields.pop("max_labels_per_second") / 10.0
        return fields


@dataclasses.dataclass(frozen=True)
class TimeSyncOptions(GroupedOptions):
    """The optimisations of a time-synchronous joint search (:func:`llmasr.search.joint_ctc.joint_time_sync_search`).

    :param label_topk: labels tried per frame (CTC top-k pruning; None: all)
    :param soft_collapse_threshold: merge frames whose blank probability exceeds it (None: off)
    :param score_new_labels_only: run the model only for hypotheses that got a new label this frame (False: every
        hypothesis every frame, the reference the optimisation is measured against)
    :param batch_hyps: one model call per frame for all hypotheses (False: one call per hypothesis)
    """

    label_topk: Optional[int] = 8
    soft_collapse_threshold: Optional[float] = None
    score_new_labels_only: bool = True
    batch_hyps: bool = True
