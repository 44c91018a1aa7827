"""Demo intent classifier: multinomial naive Bayes over the shipped banking utterances.

``intents.csv`` (shipped with the package) holds hand-written customer utterances labelled with
their intent. The model is a bag-of-words multinomial naive Bayes with Laplace smoothing, computed
in log space with numpy, trained once on first use. The service loads it by import path::

    model:
      import_path: exporter.demo_models.intent:predict
      derive_features: exporter.demo_models.intent:derive_features

:func:`predict` takes ``{"text": str, ...}`` and returns ``(intent, posterior probability)``;
:func:`derive_features` turns the raw text into what the monitor watches: ``text_length``,
``token_count``, ``oov_share`` (tokens the model never saw in training) and ``channel``.

:func:`synthetic_requests` makes request traffic from the corpus the way users type it (a few typos,
a channel each), or shifted (long pasted texts full of unknown words, mostly over the phone). The
example reference profile and the demo traffic both come from it, so steady demo traffic matches
the reference and the shifted traffic drifts.

Demo only: a raw feature ``"_fault": "error"`` makes :func:`predict` raise
:class:`~exporter.demo_models.DemoModelError`, and ``"_fault": "slow"`` makes it sleep 0.25 to 0.5 s
first (see :mod:`exporter.demo_models`). A ``text`` that is not a string raises ``TypeError``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from exporter.demo_models import Once, inject_fault

__all__ = [
    "CHANNELS",
    "CHANNEL_SHARES",
    "SHIFTED_CHANNEL_SHARES",
    "NaiveBayes",
    "Utterance",
    "derive_features",
    "intents",
    "load_utterances",
    "model",
    "predict",
    "synthetic_requests",
    "tokenize",
    "with_typos",
]

FloatArray = npt.NDArray[np.float64]

#: Where requests come from, and how often in normal traffic (also the reference's mix).
CHANNELS = ("app", "web", "phone")
CHANNEL_SHARES = (0.55, 0.30, 0.15)
#: The channel mix of shifted traffic: a phone campaign brings transcribed calls.
SHIFTED_CHANNEL_SHARES = (0.10, 0.20, 0.70)
#: Share of words (of four letters or more) that users type with one typo.
TYPO_RATE = 0.05
#: Laplace smoothing: every word counts once more in every intent than it was seen.
LAPLACE_ALPHA = 1.0
#: Words of pasted foreign-language and ticketing text in shifted traffic; the ones the model
#: happens to know are dropped at use, so every pasted word is out of vocabulary.
PASTED_WORDS = (
    "bonjour merci kontostand ueberweisung necesito ayuda saldo tarjeta perdida sperren bitte "
    "guthaben rekening factuur urgente cuenta karte geld zahlung banco obrigado ajuda cartao "
    "conta reclamacao fwd ref ticket invoice attn sehr geehrte damen herren cordialement "
    "atentamente grazie conto bloccare carta smarrita"
).split()
#: How many pasted words a shifted request carries (low, high inclusive).
PASTED_WORD_RANGE = (10, 25)

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_WORD = re.compile(r"[A-Za-z]{4,}")
_CORPUS = "intents.csv"


@dataclass(frozen=True)
class Utterance:
    """One labelled training utterance."""

    text: str
    intent: str


def _read_corpus() -> tuple[Utterance, ...]:
    source = resources.files("exporter.demo_models").joinpath(_CORPUS)
    rows = csv.DictReader(io.StringIO(source.read_text(encoding="utf-8")))
    return tuple(Utterance(row["text"], row["intent"]) for row in rows)


_corpus = Once(_read_corpus)


def load_utterances() -> tuple[Utterance, ...]:
    """The shipped training utterances, in file order."""
    return _corpus.get()


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers; an apostrophe stays inside a word (``what's``)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, eq=False)
class NaiveBayes:
    """A fitted multinomial naive Bayes text classifier.

    ``log_likelihood[c, w]`` is ``log P(word w | intent c)`` with Laplace smoothing; words never
    seen in training carry no evidence and are skipped at prediction time.
    """

    classes: tuple[str, ...]
    vocabulary: Mapping[str, int]
    log_prior: FloatArray
    log_likelihood: FloatArray

    @classmethod
    def fit(
        cls, texts: Sequence[str], labels: Sequence[str], *, alpha: float = LAPLACE_ALPHA
    ) -> NaiveBayes:
        """Count words per intent and turn the counts into smoothed log probabilities."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if not texts:
            raise ValueError("no training texts")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        classes = tuple(sorted(set(labels)))
        class_index = {c: i for i, c in enumerate(classes)}
        vocabulary: dict[str, int] = {}
        rows: list[int] = []
        columns: list[int] = []
        for text, label in zip(texts, labels, strict=True):
            for token in tokenize(text):
                rows.append(class_index[label])
                columns.append(vocabulary.setdefault(token, len(vocabulary)))
        counts = np.zeros((len(classes), len(vocabulary)), dtype=np.float64)
        np.add.at(counts, (np.asarray(rows, dtype=np.intp), np.asarray(columns, dtype=np.intp)), 1)
        smoothed = counts + alpha
        log_likelihood = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        documents = np.bincount([class_index[label] for label in labels], minlength=len(classes))
        log_prior = np.log(documents / documents.sum())
        return cls(classes, vocabulary, log_prior, log_likelihood)

    def posterior(self, text: str) -> FloatArray:
        """P(intent | text) for every class, in the order of :attr:`classes`."""
        known = [self.vocabulary[t] for t in tokenize(text) if t in self.vocabulary]
        scores = self.log_prior + self.log_likelihood[:, known].sum(axis=1)
        scores = scores - scores.max()  # exp() of the largest is 1: no overflow, no underflow
        weights = np.exp(scores)
        return np.asarray(weights / weights.sum(), dtype=np.float64)

    def classify(self, text: str) -> tuple[str, float]:
        """The most probable intent and its posterior probability."""
        probabilities = self.posterior(text)
        best = int(np.argmax(probabilities))
        return self.classes[best], float(probabilities[best])

    def oov_share(self, tokens: Sequence[str]) -> float:
        """Share of ``tokens`` not in the training vocabulary (0 for no tokens)."""
        if not tokens:
            return 0.0
        unknown = sum(1 for t in tokens if t not in self.vocabulary)
        return unknown / len(tokens)


def _train() -> NaiveBayes:
    corpus = load_utterances()
    return NaiveBayes.fit([u.text for u in corpus], [u.intent for u in corpus])


_model = Once(_train)


def model() -> NaiveBayes:
    """The classifier trained on the whole shipped corpus (trained on the first call)."""
    return _model.get()


def intents() -> tuple[str, ...]:
    """The intents the classifier knows, sorted."""
    return model().classes


def _text(features: Mapping[str, Any]) -> str:
    if not isinstance(features, Mapping):
        raise TypeError(f"features must be a mapping, got {type(features).__name__}")
    text = features.get("text")
    if not isinstance(text, str):
        raise TypeError(f"features['text'] must be a string, got {type(text).__name__}")
    return text


def predict(features: Mapping[str, Any]) -> tuple[str, float]:
    """Classify ``features["text"]``: ``(intent, posterior probability of that intent)``."""
    if isinstance(features, Mapping):
        inject_fault(features)
    return model().classify(_text(features))


def derive_features(features: Mapping[str, Any]) -> dict[str, Any]:
    """The watched features of a request: text length, token count, OOV share and channel."""
    text = _text(features)
    tokens = tokenize(text)
    return {
        "text_length": len(text),
        "token_count": len(tokens),
        "oov_share": model().oov_share(tokens),
        "channel": features.get("channel"),
    }


def with_typos(text: str, rng: np.random.Generator, rate: float = TYPO_RATE) -> str:
    """``text`` as a user might type it: each longer word has a ``rate`` chance of one typo.

    A typo swaps two neighbouring letters, drops a letter or doubles one (never the first letter),
    so the word usually becomes one the model has never seen.
    """

    def typo(match: re.Match[str]) -> str:
        word = match.group(0)
        if rng.random() >= rate:
            return word
        at = int(rng.integers(1, len(word) - 1))
        kind = int(rng.integers(3))
        if kind == 0:
            return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        if kind == 1:
            return word[:at] + word[at + 1 :]
        return word[:at] + word[at] + word[at:]

    return _WORD.sub(typo, text)


def _pasted_text(rng: np.random.Generator, vocabulary: Mapping[str, int]) -> str:
    words = [w for w in PASTED_WORDS if w not in vocabulary]
    low, high = PASTED_WORD_RANGE
    count = int(rng.integers(low, high + 1))
    picked = [words[int(i)] for i in rng.integers(len(words), size=count)]
    reference = f"{int(rng.integers(100_000, 1_000_000))}"
    return f"-- {' '.join(picked)} {reference}"


def synthetic_requests(n: int, seed: int, shift: bool = False) -> pd.DataFrame:
    """``n`` requests made from the shipped utterances: columns ``text``, ``channel``, ``intent``.

    The utterances are taken in shuffled rounds over the whole corpus (``n`` equal to ``k`` times
    the corpus size uses each utterance exactly ``k`` times), typed with :func:`with_typos`, and
    given a channel drawn from :data:`CHANNEL_SHARES`. With ``shift`` every text is followed by
    10 to 25 pasted words the model does not know and the channel mix is
    :data:`SHIFTED_CHANNEL_SHARES`. ``intent`` is the true label. The same ``n`` and ``seed``
    give the same frame.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    corpus = load_utterances()
    rounds = math.ceil(n / len(corpus))
    order = [int(i) for _ in range(rounds) for i in rng.permutation(len(corpus))][:n]
    shares = SHIFTED_CHANNEL_SHARES if shift else CHANNEL_SHARES
    channels = rng.choice(len(CHANNELS), size=n, p=shares)
    vocabulary = model().vocabulary if shift else {}
    texts = []
    for index in order:
        text = with_typos(corpus[index].text, rng)
        if shift:
            text = f"{text} {_pasted_text(rng, vocabulary)}"
        texts.append(text)
    return pd.DataFrame(
        {
            "text": texts,
            "channel": [CHANNELS[int(c)] for c in channels],
            "intent": [corpus[i].intent for i in order],
        }
    )
