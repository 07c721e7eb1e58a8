"""CTC prefix scorer (as ESPnet's CTCPrefixScoreTH): log p_ctc(prefix ...) for label-synchronous joint search.

Keeps per hypothesis the forward variables r_t^n (paths ending in the last label) and r_t^b (ending in blank)
over all frames; the score of candidate c is psi(g + c) - psi(g), for EOS log p_ctc(g) - psi(g).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from llmasr.search.scorer import PartialLabelScorer

NEG = float("-inf")


@dataclass
class CTCPrefixState:
    """r [T, N, 2] (log r^n, log r^b of the prefix), psi [N] (log prefix prob), last [N] (-1 = empty), batch [N],
    n [N] labels in the prefix (None: unknown, taken as 0)."""

    r: torch.Tensor
    psi: torch.Tensor
    last: torch.Tensor
    batch: torch.Tensor
    n: Optional[torch.Tensor] = None


class CTCPrefixScorer(PartialLabelScorer):
    """Prefix scores from CTC log-probs ``log_probs`` [B, T, V] with ``lengths`` [B].

    Label ids are shared with the decoder; ``eos`` gets the full-sequence probability, ``blank`` gets -inf.
    ``select`` after ``score_partial`` takes flat indices ``row * K + candidate_column``.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, *, blank: int, eos: int):
        self.x = log_probs.float()  # [B, T, V]
        self.lengths = lengths.long().to(self.x.device)  # [B]
        self.blank, self.eos = blank, eos
        T = self.x.shape[1]
        self.tmask = torch.arange(T, device=self.x.device)[None, :] < self.lengths[:, None]  # [B, T]

    def initial_state(self, batch_indices: torch.Tensor) -> CTCPrefixState:
        b = batch_indices.to(self.x.device)
        xb = self.x[b, :, self.blank].masked_fill(~self.tmask[b], 0.0)  # [N, T]
        rb = xb.cumsum(1).T  # [T, N]
        r = torch.stack([torch.full_like(rb, NEG), rb], dim=-1)  # [T, N, 2]
        return CTCPrefixState(r, torch.zeros(len(b), device=self.x.device),
                              torch.full((len(b),), -1, dtype=torch.long, device=self.x.device), b,
                              torch.zeros(len(b), dtype=torch.long, device=self.x.device))

    def score_partial(self, state: CTCPrefixState, labels: torch.Tensor, candidates: torch.Tensor
                      ) -> Tuple[torch.Tensor, CTCPrefixState]:
        N, K = candidates.shape
        T = self.x.shape[1]
        cand = candidates.to(self.x.device)
        b = state.batch
        xs = self.x[b]  # [N, T, V]
        xc = xs.gather(2, cand.unsqueeze(1).expand(N, T, K)).permute(1, 0, 2)  # [T, N, K]
        xblank = xs[:, :, self.blank].T.unsqueeze(-1)  # [T, N, 1]
        valid = self.tmask[b].T.unsqueeze(-1)  # [T, N, 1]
        r_prev = state.r  # [T, N, 2]
        same = cand == state.last.unsqueeze(1)  # [N, K]
        # phi_t: prob of prefix g up to t that may be followed by c at t+1
        phi = torch.where(same.unsqueeze(0), r_prev[:, :, 1:2].expand(T, N, K),
                          torch.logaddexp(r_prev[:, :, 0], r_prev[:, :, 1]).unsqueeze(-1).expand(T, N, K))  # [T,N,K]
        rn = torch.full((T, N, K), NEG, device=self.x.device)
        rbk = torch.full((T, N, K), NEG, device=self.x.device)
        empty = (state.last < 0).unsqueeze(-1).expand(N, K)  # [N, K]
        rn[0] = torch.where(empty, xc[0], torch.full_like(xc[0], NEG))
        psi = rn[0].clone()  # [N, K]
        # a prefix of L labels extended by one cannot end before frame L: the frames before stay -inf
        start = max(1, int(state.n.min())) if state.n is not None and N else 1
        for t in range(start, T):
            v = valid[t]  # [N, 1]
            new_n = torch.logaddexp(rn[t - 1], phi[t - 1]) + xc[t]
            new_b = torch.logaddexp(rn[t - 1], rbk[t - 1]) + xblank[t]
            rn[t] = torch.where(v, new_n, rn[t - 1])
            rbk[t] = torch.where(v, new_b, rbk[t - 1])
            psi = torch.where(v, torch.logaddexp(psi, phi[t - 1] + xc[t]), psi)
        last_t = (self.lengths[b] - 1).clamp(min=0)  # [N]
        full = torch.logaddexp(r_prev[last_t, torch.arange(N), 0], r_prev[last_t, torch.arange(N), 1])  # [N]
        is_eos = cand == self.eos
        psi = torch.where(is_eos, full.unsqueeze(1).expand(N, K), psi)
        psi = torch.where(cand == self.blank, torch.full_like(psi, NEG), psi)
        scores = psi - state.psi.unsqueeze(1)  # [N, K]
        n = state.n if state.n is not None else torch.zeros(N, dtype=torch.long, device=self.x.device)
        new_state = CTCPrefixState(
            torch.stack([rn, rbk], dim=-1).reshape(T, N * K, 2), psi.reshape(N * K),
            cand.reshape(N * K), b.repeat_interleave(K), (n + 1).repeat_interleave(K))
        return scores, new_state

    def score(self, state: CTCPrefixState, labels: torch.Tensor) -> Tuple[torch.Tensor, CTCPrefixState]:
        """All V labels as candidates (slow; for tests). ``select`` then takes ``row * V + label``."""
        N = state.psi.shape[0]
        V = self.x.shape[2]
        return self.score_partial(state, labels, torch.arange(V).unsqueeze(0).expand(N, V))

    def select(self, state: CTCPrefixState, indices: torch.Tensor) -> CTCPrefixState:
        i = indices.to(self.x.device)
        return CTCPrefixState(state.r[:, i], state.psi[i], state.last[i], state.batch[i],
                              None if state.n is None else state.n[i])

    def final_score(self, state: CTCPrefixState) -> torch.Tensor:
        """log p_ctc(prefix) - psi(prefix) per row."""
        N = state.psi.shape[0]
        last_t = (self.lengths[state.batch] - 1).clamp(min=0)
        full = torch.logaddexp(state.r[last_t, torch.arange(N), 0], state.r[last_t, torch.arange(N), 1])
        return full - state.psi
