"""BM25 retrieval over a local JSONL corpus (the search tool of Search-R1-style agents).

Corpus format: one JSON object per line, ``{"id": str, "title": str, "text": str}``. The
index (``bm25s``: sparse BM25 on NumPy, no torch) is built once and cached on disk under
``cache_dir/<fingerprint>/``, where the fingerprint hashes the corpus bytes, the BM25
parameters, the tokenizer version and the ``bm25s`` version: a changed corpus gets a new
index, an unchanged one is loaded instead of rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BM25Retriever", "Passage", "format_passages", "load_corpus", "tokenize"]

_TOKENIZER_VERSION = "w1"
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that "
    "the their they this to was were which who whom whose with what where when how did does "
    "do".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens minus a small English stop-word list (index and queries)."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS]


@dataclasses.dataclass(frozen=True)
class Passage:
    """One retrieved document: corpus ``id``, ``title``, ``text`` and its BM25 ``score``."""

    id: str
    title: str
    text: str
    score: float = 0.0


def load_corpus(path: str | os.PathLike) -> list[dict[str, str]]:
    """Reads a JSONL corpus into ``[{"id", "title", "text"}, ...]``.

    Raises:
      ValueError: a line that is not a JSON object with string ``id`` and ``text`` (the
        message names the line); ``title`` defaults to ``""``.
    """
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            if not isinstance(d, dict) or not isinstance(d.get("text"), str):
                raise ValueError(f"{path}:{n}: need an object with a string 'text'")
            docs.append(
                {"id": str(d.get("id", n - 1)), "title": str(d.get("title", "")), "text": d["text"]}
            )
    return docs


def format_passages(passages: Sequence[Passage], max_chars_each: int | None = None) -> str:
    """Search-R1's passage format (arXiv 2503.09516, ``_passages2string``), one per line::

    Doc 1(Title: Zorvex Labs) Zorvex Labs is a robotics company founded by ...
    """
    lines = []
    for i, p in enumerate(passages, 1):
        text = p.text if max_chars_each is None else p.text[:max_chars_each]
        lines.append(f"Doc {i}(Title: {p.title}) {text}")
    return "\n".join(lines)


class BM25Retriever:
    """BM25 search over a JSONL corpus, with an on-disk index cache.

    Args:
      corpus_path: the JSONL corpus (see :func:`load_corpus`).
      cache_dir: where indexes are cached (``<cache_dir>/<fingerprint>/``); None builds in
        memory only.
      k1, b: BM25 parameters (``bm25s`` defaults 1.5 / 0.75).
      index_title: index ``title + " " + text`` (True) or the text only.

    Attributes:
      fingerprint: hex digest identifying (corpus bytes, parameters, versions).
      built: True when this instance built the index, False when it loaded a cached one.
      docs: the corpus records.
    """

    def __init__(
        self,
        corpus_path: str | os.PathLike,
        *,
        cache_dir: str | os.PathLike | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        index_title: bool = True,
    ):
        import bm25s

        self.corpus_path = Path(corpus_path)
        self.docs = load_corpus(self.corpus_path)
        if not self.docs:
            raise ValueError(f"BM25Retriever: {corpus_path} has no documents")
        h = hashlib.sha256()
        with open(self.corpus_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        params = json.dumps(
            {
                "k1": k1,
                "b": b,
                "title": index_title,
                "tok": _TOKENIZER_VERSION,
                "bm25s": getattr(bm25s, "__version__", "?"),
            },
            sort_keys=True,
        )
        h.update(params.encode())
        self.fingerprint = h.hexdigest()[:24]
        self.built = False
        index_dir = None if cache_dir is None else Path(cache_dir) / self.fingerprint
        if index_dir is not None and (index_dir / "params.index.json").exists():
            self._bm25 = bm25s.BM25.load(str(index_dir), load_corpus=False)
            return
        texts = [(d["title"] + " " + d["text"]) if index_title else d["text"] for d in self.docs]
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index([tokenize(t) for t in texts], show_progress=False)
        self.built = True
        if index_dir is not None:
            index_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp_", dir=index_dir.parent)
            try:
                self._bm25.save(tmp, show_progress=False)
                os.replace(tmp, index_dir)  # atomic: a reader never sees half an index
            except OSError:
                if not (index_dir / "params.index.json").exists():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def __len__(self) -> int:
        return len(self.docs)

    def search_batch(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        """Top-``k`` passages per query, best first; documents scoring 0 (no query term in
        common) are left out, so a query of unknown words returns ``[]``."""
        k = max(1, min(int(k), len(self.docs)))
        toks = [tokenize(q) for q in queries]
        out: list[list[Passage]] = [[] for _ in queries]
        rows = [i for i, t in enumerate(toks) if t]
        if not rows:
            return out
        ids, scores = self._bm25.retrieve(
            [toks[i] for i in rows], k=k, show_progress=False, n_threads=1
        )
        for r, i in enumerate(rows):
            for j, s in zip(ids[r], scores[r], strict=True):
                if s > 0:
                    d = self.docs[int(j)]
                    out[i].append(Passage(d["id"], d["title"], d["text"], float(s)))
        return out

    def search(self, query: str, k: int = 3) -> list[Passage]:
        """Top-``k`` passages for one query (see :meth:`search_batch`)."""
        return self.search_batch([query], k)[0]
