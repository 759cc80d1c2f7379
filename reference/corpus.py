"""The ternary-training corpus: text from a stochastic source whose entropy rate is known exactly.

The source is a variable-order Markov chain over a 32-symbol alphabet (26 letters, space and ``.,;'?``; one byte per
symbol, so bits per symbol are bits per byte). The next symbol's distribution depends on the last symbol alone for
most contexts; for some it also depends on the class (one of three) of the symbol before, and for a few of those on the
class of the one before that: a context tree of depth at most 3, so the chain is third-order Markov and its entropy
rate is ``sum over states of pi(state) * H(P(. | state))`` with ``pi`` the stationary distribution of the order-3
chain (found by power iteration; every transition has probability at least ``SMOOTHING / 32``, so the chain is
irreducible and aperiodic and the iteration converges).

The source itself (the tree and its distributions) is fixed by ``SOURCE_SEED`` so that its floor is a stable number;
the text drawn from it comes from the run's seed. The training and held-out splits are independent draws of the
stationary chain (different random streams), so they are disjoint by construction. ``--train-data PATH`` replaces both
with a user's text file: bytes as tokens (vocabulary 256), the last tenth held out, no entropy floor.

Imports NumPy and the standard library only.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALPHABET = b"abcdefghijklmnopqrstuvwxyz .,;'?"
SOURCE_SEED = 20261130
DIRICHLET_ALPHA = 0.15  # sparse next-symbol distributions: each context has a few likely successors
SMOOTHING = 0.004  # mass spread uniformly over every symbol in every context (irreducible, aperiodic chain)
SPLIT_ORDER2 = 0.4  # share of last symbols whose distribution also depends on the class of the symbol before
SPLIT_ORDER3 = 0.3  # share of those refined once more by the class of the third-last symbol
N_CLASSES = 3
HELD_OUT_FRACTION = 0.1  # of a user's file (--train-data), taken from its end


@dataclass(frozen=True)
class Source:
    """A third-order Markov chain: ``transition[x1, x2, x3, y] = P(next = y | last three = x1, x2, x3)``."""

    transition: np.ndarray  # (A, A, A, A), rows sum to 1
    stationary: np.ndarray  # (A, A, A), the stationary distribution of the last three symbols
    leaves: int  # distinct next-symbol distributions (contexts of the tree)

    @property
    def size(self) -> int:
        return self.transition.shape[0]

    def entropy_rate(self) -> float:
        """Bits per symbol of the stationary source."""
        return float(np.sum(self.stationary * _entropy(self.transition)))

    def windowed_floor(self, predictions: int) -> float:
        """The least expected bits per symbol of any predictor over windows that start without context.

        A window predicts symbols 2..L+1 from the ones before them; the first two predictions see fewer than three
        symbols of context, so they cost H(X2 | X1) and H(X3 | X1, X2) instead of the entropy rate.
        """
        triple = self.stationary
        pair = triple.sum(axis=0)  # (x_{t-1}, x_t)
        single = pair.sum(axis=0)
        h1, h2, h3 = (_joint_entropy(p) for p in (single, pair, triple))
        first, second = h2 - h1, h3 - h2
        return (first + second + (predictions - 2) * self.entropy_rate()) / predictions

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` symbol ids (uint8) from the stationary chain."""
        a = self.size
        cdfs = np.cumsum(self.transition.reshape(a**3, a), axis=1)
        cdfs[:, -1] = 1.0
        table = cdfs.tolist()
        start = rng.choice(a**3, p=self.stationary.reshape(-1) / self.stationary.sum())
        state = int(start)
        out = bytearray(n)
        for i, u in enumerate(rng.random(n).tolist()):
            y = bisect.bisect_right(table[state], u)
            out[i] = y
            state = (state * a + y) % a**3  # drop the oldest symbol, append y
        return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits along the last axis."""
    logs = np.log2(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=-1)


def _joint_entropy(p: np.ndarray) -> float:
    return float(_entropy(p.reshape(-1)))


@functools.lru_cache(maxsize=1)
def source() -> Source:
    """The grader's source, built from ``SOURCE_SEED`` (deterministic, about a second)."""
    rng = np.random.default_rng(SOURCE_SEED)
    a = len(ALPHABET)
    classes = rng.integers(0, N_CLASSES, size=a)
    transition = np.empty((a, a, a, a))
    leaves = 0
    for x3 in range(a):
        refine2 = rng.random() < SPLIT_ORDER2
        for g2 in range(N_CLASSES if refine2 else 1):
            refine3 = refine2 and rng.random() < SPLIT_ORDER3
            for g1 in range(N_CLASSES if refine3 else 1):
                dist = (1 - SMOOTHING) * rng.dirichlet(np.full(a, DIRICHLET_ALPHA)) + SMOOTHING / a
                leaves += 1
                x2_mask = (classes == g2) if refine2 else np.ones(a, bool)
                x1_mask = (classes == g1) if refine3 else np.ones(a, bool)
                transition[np.ix_(x1_mask, x2_mask, [x3])] = dist
    return Source(transition, _stationary(transition), leaves)


def _stationary(transition: np.ndarray, tol: float = 1e-14, max_iter: int = 5000) -> np.ndarray:
    """Power iteration on the order-3 chain: pi'(x2, x3, y) = sum_x1 pi(x1, x2, x3) P(y | x1, x2, x3)."""
    a = transition.shape[0]
    pi = np.full((a, a, a), 1.0 / a**3)
    for _ in range(max_iter):
        nxt = np.einsum("abc,abcd->bcd", pi, transition)
        nxt /= nxt.sum()
        if np.max(np.abs(nxt - pi)) < tol:
            return nxt
        pi = nxt
    raise RuntimeError("stationary distribution did not converge")


@dataclass(frozen=True)
class Corpus:
    """Token ids of both splits, the text each id stands for, and the figures held-out results are read against."""

    train: np.ndarray  # int64 token ids the submission trains on
    held_out: np.ndarray  # int64 token ids it never sees
    symbols: bytes  # byte of each token id
    floor_bits: float | None  # the source's entropy rate in bits per byte (None: unknown, for a user's file)
    name: str

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def decode(self, ids: np.ndarray) -> str:
        return bytes(self.symbols[int(i)] for i in ids).decode("latin-1")


def synthetic(train_len: int, held_out_len: int, rng: np.random.Generator) -> Corpus:
    """Both splits drawn from the grader's source, each from its own random stream."""
    src = source()
    train_rng, held_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
    train, held = (src.sample(n, r).astype(np.int64) for n, r in ((train_len, train_rng), (held_out_len, held_rng)))
    return Corpus(train, held, ALPHABET, src.entropy_rate(), f"variable-order Markov source (seed {SOURCE_SEED})")


def from_file(path: Path) -> Corpus:
    """A user's text file as bytes (vocabulary 256), the last ``HELD_OUT_FRACTION`` held out; no known floor."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.int64)
    cut = len(data) - max(1, int(len(data) * HELD_OUT_FRACTION))
    return Corpus(data[:cut], data[cut:], bytes(range(256)), None, f"{path.name} (last 10% held out)")


def unigram_bits(train: np.ndarray, held_out: np.ndarray, vocab: int) -> float:
    """Bits per token of the add-one-smoothed unigram distribution of the training split, on the held-out split."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    return float(-np.mean(np.log2(counts[held_out] / counts.sum())))
