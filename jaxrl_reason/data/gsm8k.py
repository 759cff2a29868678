"""GSM8K (Cobbe et al., 2021, arXiv 2110.14168) through tensorflow-datasets, without TensorFlow.

Two sources give the same records, read the same way (``tfds.data_source``: random access to
array_record files, no TensorFlow):

- ``source="tfds"``: the catalog's ``gsm8k`` builder downloads and prepares the dataset as
  array_record (needs the internet the first time; the download's checksums are the
  catalog's).
- ``source="local"``: a directory with ``train.jsonl`` / ``test.jsonl`` (the files of
  openai/grade-school-math). The catalog builder is subclassed with only its
  ``_split_generators`` changed to read those files, so the features (``question``,
  ``answer``, ``annotation``, ``short_answer``), the example keys and hence tfds's
  deterministic record order are the catalog's. tfds 4.9 writes array_record with
  ``array_record``'s own writer and serialises examples with its numpy example serializer,
  so preparing needs no TensorFlow either. The prepared copy lives in
  ``cache_dir/gsm8k_local-<sha of the jsonl files>/gsm8k/1.0.0/`` and is reused (idempotent;
  a changed file gets a new directory; a file lock serialises concurrent preparers).

Local files are checked line by line before anything is written: a line that is not JSON,
or a record without a ``question`` / ``answer`` string or without the ``#### <answer>``
marker, raises :class:`Gsm8kDataError` naming the file and line. The array_record copy is
built in a temporary folder and renamed into place only when complete, so a failed or
interrupted preparation leaves no partial cache folder behind. Nothing is ever written into
the JSONL folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile

from jaxrl_reason.data.base import Example, Task

__all__ = ["Gsm8kDataError", "Gsm8kTask", "check_gsm8k_jsonl", "prepare_gsm8k_local"]

_SPLITS = ("train", "test", "train_socratic", "test_socratic")


class Gsm8kDataError(ValueError):
    """A malformed GSM8K JSONL file; the message names the file and the line."""


def _records(path: str):
    """Yields ``(line index, record)`` of a GSM8K JSONL file, checked; blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            where = f"{path}:{i + 1}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise Gsm8kDataError(
                    f"{where}: not valid JSON ({e.msg} at column {e.colno})"
                ) from None
            if not isinstance(rec, dict):
                raise Gsm8kDataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            for key in ("question", "answer"):
                if not isinstance(rec.get(key), str):
                    got = "missing" if key not in rec else type(rec[key]).__name__
                    raise Gsm8kDataError(
                        f"{where}: record needs a string {key!r} ({got}); each line must be "
                        '{"question": ..., "answer": "... #### <number>"}'
                    )
            if rec["answer"].count("#### ") != 1:
                raise Gsm8kDataError(
                    f"{where}: 'answer' must contain the final answer marker '#### ' exactly "
                    f"once (found {rec['answer'].count('#### ')})"
                )
            yield i, rec


def check_gsm8k_jsonl(path: str) -> int:
    """Checks every line of a GSM8K JSONL file; returns the number of records.

    Raises:
      Gsm8kDataError: the first bad line (not JSON, no ``question`` / ``answer`` string, no
        single ``#### `` marker), as ``<path>:<line>: <what is wrong>``.
    """
    return sum(1 for _ in _records(path))


def _fingerprint(jsonl_dir: str, splits: list[str]) -> str:
    h = hashlib.sha256()
    for s in splits:
        h.update(s.encode())
        with open(os.path.join(jsonl_dir, f"{s}.jsonl"), "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _local_builder_cls():
    from tensorflow_datasets.core import utils as tfds_utils
    from tensorflow_datasets.text.gsm8k import gsm8k as tfds_gsm8k

    class _Gsm8kLocal(tfds_gsm8k.Gsm8k, skip_registration=True):
        """The catalog's gsm8k builder reading local JSONL files instead of downloading."""

        name = "gsm8k"

        def __init__(self, *, jsonl_dir: str, **kwargs):
            self._jsonl_dir = jsonl_dir
            super().__init__(**kwargs)

        # tfds locates a builder's source file to find its download checksums; for a class
        # defined in a function of a non-tfds package that lookup needs the optional
        # `importlib_resources` package. Nothing is downloaded here, so there is no file.
        @tfds_utils.classproperty
        @classmethod
        def code_path(cls):
            return None

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            return {
                s: self._generate_examples(os.path.join(self._jsonl_dir, f"{s}.jsonl"))
                for s in _SPLITS
                if os.path.exists(os.path.join(self._jsonl_dir, f"{s}.jsonl"))
            }

        def _generate_examples(self, path):
            # The catalog's generator (same keys: the line index; same fields), reading the
            # checked records: a bad line names its file and line, extra keys are dropped.
            for i, rec in _records(os.fspath(path)):
                annotation, short = rec["answer"].split("#### ")
                yield (
                    i,
                    {
                        "question": rec["question"],
                        "answer": rec["answer"],
                        "annotation": annotation,
                        "short_answer": short,
                    },
                )

    return _Gsm8kLocal


def _catalog_builder_cls():
    """The catalog's gsm8k builder, with its source location given explicitly.

    tfds finds a builder's download checksums (``checksums.tsv`` next to its code) through
    ``code_path``, which in tfds 4.9.10 needs the optional ``importlib_resources`` package
    that this project does not install. The catalog module's own file is that location, so
    say it; everything else is the catalog builder, unchanged.
    """
    from etils import epath
    from tensorflow_datasets.core import utils as tfds_utils
    from tensorflow_datasets.text.gsm8k import gsm8k as tfds_gsm8k

    class _Gsm8kCatalog(tfds_gsm8k.Gsm8k, skip_registration=True):
        name = "gsm8k"

        @tfds_utils.classproperty
        @classmethod
        def code_path(cls):
            return epath.Path(tfds_gsm8k.__file__)

    return _Gsm8kCatalog


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_gsm8k_local(jsonl_dir: str, cache_dir: str) -> str:
    """Converts GSM8K JSONL files to a tfds array_record dataset once; returns its data_dir.

    Args:
      jsonl_dir: a directory with ``train.jsonl`` and/or ``test.jsonl`` (and optionally the
        ``*_socratic.jsonl`` files), each line ``{"question": ..., "answer": "... #### N"}``.
      cache_dir: where prepared datasets are kept (created if missing).
    Returns:
      A ``data_dir`` for ``tfds.data_source("gsm8k", data_dir=...)``.
    Raises:
      FileNotFoundError: no split file in ``jsonl_dir``.
      Gsm8kDataError: a malformed line (names the file and line); nothing is left in
        ``cache_dir`` but the lock file.
    """
    import tensorflow_datasets as tfds

    jsonl_dir = os.path.abspath(os.path.expanduser(jsonl_dir))
    splits = [s for s in _SPLITS if os.path.exists(os.path.join(jsonl_dir, f"{s}.jsonl"))]
    if not splits:
        raise FileNotFoundError(
            f"no GSM8K split files (train.jsonl, test.jsonl) in jsonl_dir={jsonl_dir!r}"
        )
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    name = f"gsm8k_local-{_fingerprint(jsonl_dir, splits)}"
    data_dir = os.path.join(cache_dir, name)
    done = os.path.join(data_dir, "PREPARED")
    if os.path.exists(done):
        return data_dir
    with _file_lock(os.path.join(cache_dir, ".gsm8k.lock")):
        if os.path.exists(done):
            return data_dir
        for s in splits:  # a bad line fails here, before anything is written
            check_gsm8k_jsonl(os.path.join(jsonl_dir, f"{s}.jsonl"))
        if os.path.exists(data_dir):  # left by an older, non-atomic preparation
            shutil.rmtree(data_dir)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir)
        try:
            builder = _local_builder_cls()(
                jsonl_dir=jsonl_dir, data_dir=tmp, file_format="array_record"
            )
            builder.download_and_prepare(
                download_dir=os.path.join(tmp, "downloads"),
                download_config=tfds.download.DownloadConfig(verify_ssl=False),
            )
            shutil.rmtree(os.path.join(tmp, "downloads"), ignore_errors=True)  # always empty
            with open(os.path.join(tmp, "PREPARED"), "w") as f:
                f.write("\n".join(splits) + "\n")
            os.rename(tmp, data_dir)  # atomic on one filesystem: all or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return data_dir


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class Gsm8kTask(Task):
    """GSM8K word problems; the gold answer is the text after ``####`` (e.g. ``"1,234"``).

    Args:
      split: ``"train"`` (7,473) or ``"test"`` (1,319) (or the ``*_socratic`` variants).
      source: ``"local"`` (needs ``jsonl_dir`` and ``cache_dir``), ``"tfds"`` (the catalog,
        downloaded to ``data_dir``: only when asked for by name), or ``"auto"`` (``"local"``;
        without ``jsonl_dir`` it is an error, never a silent download).
      jsonl_dir: directory of the JSONL files for ``source="local"``.
      cache_dir: where the local conversion is cached; default ``<jsonl_dir>/../.cache`` would
        write next to shared data, so it is required.
      data_dir: tfds data directory for ``source="tfds"`` (tfds's default when None).
      num_examples: keep only the first ``num_examples`` records (small evaluations).
      **task_kwargs: see :class:`Task` (``prompt_format`` defaults to ``"hash"``).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        source: str = "auto",
        jsonl_dir: str | None = None,
        cache_dir: str | None = None,
        data_dir: str | None = None,
        num_examples: int | None = None,
        **task_kwargs,
    ):
        task_kwargs.setdefault("prompt_format", "hash")
        super().__init__(**task_kwargs)
        import tensorflow_datasets as tfds

        if split not in _SPLITS:
            raise ValueError(f"Gsm8kTask: split={split!r}; use one of {_SPLITS}")
        if source == "auto":
            if jsonl_dir is None:
                raise ValueError(
                    "Gsm8kTask: no jsonl_dir (the folder with train.jsonl / test.jsonl); pass "
                    "it, or source='tfds' to download GSM8K through tensorflow-datasets"
                )
            source = "local"
        if source == "local":
            if jsonl_dir is None or cache_dir is None:
                raise ValueError(
                    "Gsm8kTask(source='local') needs jsonl_dir (the folder with train.jsonl / "
                    "test.jsonl) and cache_dir (where the array_record copy is written)"
                )
            data_dir = prepare_gsm8k_local(jsonl_dir, cache_dir)
            self._ds = tfds.data_source("gsm8k", split=split, data_dir=data_dir, download=False)
        elif source == "tfds":
            # What tfds.data_source("gsm8k", download=True) does, with the catalog builder
            # made to find its checksums (see _catalog_builder_cls); a no-op when prepared.
            builder = _catalog_builder_cls()(data_dir=data_dir, file_format="array_record")
            builder.download_and_prepare()
            data_dir = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
            self._ds = tfds.data_source("gsm8k", split=split, data_dir=data_dir, download=False)
        else:
            raise ValueError(f"Gsm8kTask: source={source!r}; use 'local', 'tfds' or 'auto'")
        self.split, self.source, self.data_dir = split, source, data_dir
        self.name = f"gsm8k/{split}"
        n = len(self._ds)
        if num_examples is not None and not 0 < num_examples:
            raise ValueError(f"Gsm8kTask: num_examples={num_examples} must be > 0")
        self._n = n if num_examples is None else min(n, num_examples)

    def __len__(self) -> int:
        return self._n

    def _get(self, index: int) -> Example:
        from jaxrl_reason.rewards.extract import extract_hash

        rec = self._ds[index]
        full = _text(rec["answer"])
        gold = extract_hash(full)
        if gold is None:  # never in GSM8K; keep the catalog's split as a fallback
            gold = _text(rec["short_answer"]).strip()
        return Example(
            id=f"gsm8k/{self.split}/{index}",
            prompt=_text(rec["question"]),
            answer=gold,
            meta={"solution": full},
        )
