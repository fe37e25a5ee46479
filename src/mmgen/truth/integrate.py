"""``log ∫ p_T(z) Π_{m∈S} p(x_m | z, c) dz`` for every tuple, class and modality subset S.

docs/truth.md §2. With Bernoulli pixels, ``log p(x_m | z, c) = Σ_pixels [x·l − softplus(l)]``
exactly (``l`` the generating decoder's logits), so for a block of codes shared by every tuple
the scores of all pairs (tuple, code) are one matrix product per modality
(``metrics.bernoulli_log_likelihood_matrix``); each subset's integral is a log-sum-exp over the
codes of the summed scores plus the codes' log-weights. Codes are decoded once per class; the
running log-sum-exp over blocks keeps the working memory at one ``(tuples, codes)`` block per
modality, whatever the number of tuples or codes. Scores are float32 products accumulated in
float64 (so a z-independent decoder gives an exactly z-independent integral).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmgen.metrics import softplus_sum

Decoder = Callable[[Tensor, Tensor], Tensor]  # (z (B, d), labels (B,)) → logits (B, ...)
TUPLE_CHUNK = 1024  # tuples scored at a time (memory only)


@dataclass(frozen=True)
class Integrals:
    """Per subset S (a tuple of modality indices): ``(N, C)`` float64 tensors.

    ``log_mean[S][i, c] = log Σ_j w_j Π_{m∈S} p(x_im | z_j, c)``; ``log_mean_square`` the same
    with every term squared (``log Σ_j w_j² Π p²``), for the standard error of importance
    sampling.
    """

    log_mean: dict[tuple[int, ...], Tensor]
    log_mean_square: dict[tuple[int, ...], Tensor]


@torch.no_grad()
def integrate(
    decoders: Sequence[Decoder],
    images: Sequence[Tensor],
    num_classes: int,
    codes: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    subsets: Sequence[tuple[int, ...]],
    tuple_chunk: int = TUPLE_CHUNK,
) -> Integrals:
    """Integrate every subset's likelihood against the codes, for every tuple and class.

    Args:
        decoders: per modality, the generating decoder's logits.
        images: per modality, ``(N, P)`` float32 pixels in [0, 1] (0/1 for sampled files),
            on the decoders' device.
        num_classes: C; every tuple is scored under every class (for ``p(x) = Σ_c π_c p(x|c)``).
        codes: called once per class; yields blocks ``(z (G_b, d), log w (G_b,) float64)``.
        subsets: the modality subsets S to integrate.

    Returns:
        ``Integrals`` for ``subsets``.
    """
    size = len(images[0])
    device = images[0].device
    log_mean = {
        s: torch.full((size, num_classes), -torch.inf, dtype=torch.float64, device=device)
        for s in subsets
    }
    log_square = {s: torch.full_like(log_mean[s], -torch.inf) for s in subsets}
    for label in range(num_classes):
        for z, log_weight in codes():
            z, log_weight = z.to(device), log_weight.to(device)
            labels = torch.full((len(z),), label, dtype=torch.int64, device=device)
            logits = [decode(z, labels).flatten(1).float() for decode in decoders]  # (G_b, P)
            softplus = [softplus_sum(part, 1) for part in logits]  # (G_b,)
            for start in range(0, size, tuple_chunk):
                stop = min(start + tuple_chunk, size)
                scores = [
                    (x[start:stop] @ part.T - sp).double()  # (n, G_b): log p(x_m | z_j, c)
                    for x, part, sp in zip(images, logits, softplus, strict=True)
                ]
                for subset in subsets:
                    total = log_weight + sum(scores[m] for m in subset)
                    column = log_mean[subset][start:stop, label]
                    column.copy_(torch.logaddexp(column, torch.logsumexp(total, 1)))
                    column = log_square[subset][start:stop, label]
                    column.copy_(torch.logaddexp(column, torch.logsumexp(2 * total, 1)))
    return Integrals(log_mean=log_mean, log_mean_square=log_square)
