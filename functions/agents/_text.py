"""The text analysis the reference agents do: chunking, term counts, key sentences."""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

__all__ = ["chunk", "key_sentence", "sentences", "term_counts", "words"]

_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n{2,}")
# Apostrophes inside a word (typewriter or typographic) keep it whole: "don't", "it\u2019s".
_WORD: Final = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_STOPWORD_TEXT: Final = """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def term_counts(text: str) -> Counter[str]:
    """How often each content word occurs (stopwords and one-letter words left out)."""
    return Counter(w for w in words(text) if w not in STOPWORDS and len(w) > 1)


def chunk(text: str, max_words: int) -> list[str]:
    """Whole sentences packed into chunks of at most ``max_words`` words.

    A sentence longer than the limit is split at word boundaries rather than dropped.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences(text):
        tokens = sentence.split()
        while len(tokens) > max_words:
            if current:
                chunks.append(" ".join(current))
                current, size = [], 0
            chunks.append(" ".join(tokens[:max_words]))
            tokens = tokens[max_words:]
        if size + len(tokens) > max_words and current:
            chunks.append(" ".join(current))
            current, size = [], 0
        if tokens:
            current.append(" ".join(tokens))
            size += len(tokens)
    if current:
        chunks.append(" ".join(current))
    return chunks


def key_sentence(text: str) -> str:
    """The sentence whose content words are most frequent in ``text`` (ties: the first)."""
    counts = term_counts(text)
    best, best_score = "", -1.0
    for sentence in sentences(text):
        content = [w for w in words(sentence) if w in counts]
        if not content:
            continue
        # Averaged, with a damped length bonus, so neither one keyword nor sheer length wins.
        score = sum(counts[w] for w in content) / len(content) * min(len(content), 8) ** 0.5
        if score > best_score:
            best, best_score = sentence, score
    return best or text.strip()[:200]
