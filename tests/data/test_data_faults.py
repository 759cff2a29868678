"""Data faults: GSM8K never silently downloads, malformed files name their file and line, and
a failed preparation leaves no partial cache behind. Small synthetic JSONL under tmp_path."""

import json
import os

import ml_collections
import pytest

from jaxrl_reason.data.build import build_task
from jaxrl_reason.data.gsm8k import (
    Gsm8kDataError,
    Gsm8kTask,
    check_gsm8k_jsonl,
    prepare_gsm8k_local,
)
from jaxrl_reason.data.math_dataset import load_math_records

GOOD = [
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=5\n#### 5"},
    {"question": "What is 10 - 4?", "answer": "10-4=6\n#### 6"},
    {"question": "Twice 21?", "answer": "2*21=42\n#### 42"},
]


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def _gsm8k_dir(root, test_lines=GOOD, train_lines=GOOD):
    d = os.path.join(root, "gsm8k")
    _write(os.path.join(d, "train.jsonl"), train_lines)
    _write(os.path.join(d, "test.jsonl"), test_lines)
    return d


def _cfg(**task):
    base = dict(name="gsm8k", data_dir="", source="local", prompt_format="hash")
    base.update(task)
    return ml_collections.ConfigDict(base)


@pytest.fixture(autouse=True)
def _no_download(monkeypatch, tmp_path):
    # Any attempt to build the catalog (download) builder fails the test loudly.
    import jaxrl_reason.data.gsm8k as g

    def boom():
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(g, "_catalog_builder_cls", boom)
    monkeypatch.setenv("JAXRL_CACHE_DIR", str(tmp_path / "cache"))


def test_local_source_reads_a_synthetic_folder(tmp_path):
    d = _gsm8k_dir(str(tmp_path))
    task = build_task(_cfg(data_dir=d), "test")
    assert sorted(e.answer for e in task) == ["42", "5", "6"]  # tfds order: by key hash
    assert sorted(os.listdir(d)) == ["test.jsonl", "train.jsonl"]  # nothing written there
    cache = os.path.join(tmp_path, "cache", "gsm8k")
    prepared = [f for f in os.listdir(cache) if f.startswith("gsm8k_local-")]
    assert len(prepared) == 1 and not [f for f in os.listdir(cache) if ".tmp-" in f]
    assert "downloads" not in os.listdir(os.path.join(cache, prepared[0]))


def test_source_defaults_to_local(tmp_path):
    cfg = _cfg(data_dir=_gsm8k_dir(str(tmp_path)))
    del cfg["source"]
    assert len(build_task(cfg, "train")) == 3


@pytest.mark.parametrize(
    "data_dir, match",
    [
        ("", "task.data_dir is empty.*task.source=tfds"),
        ("/no/such/gsm8k_dir", "task.data_dir='/no/such/gsm8k_dir': no such directory"),
    ],
)
def test_missing_or_mistyped_data_dir_is_an_error_not_a_download(data_dir, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        build_task(_cfg(data_dir=data_dir), "train")


def test_data_dir_without_the_split_file_names_it(tmp_path):
    d = os.path.join(tmp_path, "half")
    _write(os.path.join(d, "train.jsonl"), GOOD)
    with pytest.raises(FileNotFoundError, match=r"has no test.jsonl.*found: \['train.jsonl'\]"):
        build_task(_cfg(data_dir=d), "test")
    assert os.listdir(d) == ["train.jsonl"]


def test_tfds_source_is_explicit_and_never_uses_data_dir(tmp_path):
    with pytest.raises(ValueError, match="task.data_dir=.* is for task.source='local'"):
        build_task(_cfg(source="tfds", data_dir=str(tmp_path)), "test")
    with pytest.raises(AssertionError, match="download was attempted"):
        build_task(_cfg(source="tfds"), "test")  # asked for: it does go to the catalog
    with pytest.raises(ValueError, match="task.source='hub'"):
        build_task(_cfg(source="hub", data_dir=str(tmp_path)), "test")


def test_gsm8k_task_without_jsonl_dir_does_not_download():
    with pytest.raises(ValueError, match="no jsonl_dir"):
        Gsm8kTask("test")


@pytest.mark.parametrize(
    "bad, match",
    [
        ('{"question": "q", "answer": "#### 1"', r"test.jsonl:2: not valid JSON"),
        ({"question": "q"}, r"test.jsonl:2: record needs a string 'answer' \(missing\)"),
        ({"answer": "#### 3"}, r"test.jsonl:2: record needs a string 'question'"),
        ({"question": "q", "answer": "no marker"}, r"test.jsonl:2: .*'#### ' exactly once"),
        ("[1, 2]", r"test.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_and_line_and_leave_no_cache(tmp_path, bad, match):
    d = _gsm8k_dir(str(tmp_path), test_lines=[GOOD[0], bad, GOOD[1]])
    with pytest.raises(Gsm8kDataError, match=match):
        check_gsm8k_jsonl(os.path.join(d, "test.jsonl"))
    cache = str(tmp_path / "c")
    with pytest.raises(Gsm8kDataError, match=match):
        prepare_gsm8k_local(d, cache)
    assert os.listdir(cache) == [".gsm8k.lock"]  # no partial dataset folder
    with pytest.raises(Gsm8kDataError, match=match):
        build_task(_cfg(data_dir=d), "train")  # train is fine, but test is prepared too


def test_a_failure_while_writing_leaves_no_partial_folder(tmp_path, monkeypatch):
    import jaxrl_reason.data.gsm8k as g

    d = _gsm8k_dir(str(tmp_path))
    real = g._local_builder_cls

    def failing():
        cls = real()

        class Failing(cls, skip_registration=True):
            def _generate_examples(self, path):
                yield from list(super()._generate_examples(path))[:1]
                raise OSError("disk full")

        return Failing

    monkeypatch.setattr(g, "_local_builder_cls", failing)
    cache = str(tmp_path / "c")
    with pytest.raises(OSError, match="disk full"):
        prepare_gsm8k_local(d, cache)
    assert os.listdir(cache) == [".gsm8k.lock"]
    monkeypatch.setattr(g, "_local_builder_cls", real)
    data_dir = prepare_gsm8k_local(d, cache)  # a later run prepares it from scratch
    assert len(Gsm8kTask("test", jsonl_dir=d, cache_dir=cache)) == 3
    assert sorted(os.listdir(cache)) == [".gsm8k.lock", os.path.basename(data_dir)]


def test_blank_lines_and_extra_keys_are_tolerated(tmp_path):
    d = _gsm8k_dir(str(tmp_path), test_lines=[GOOD[0], "", dict(GOOD[1], source="x")])
    assert check_gsm8k_jsonl(os.path.join(d, "test.jsonl")) == 2
    task = Gsm8kTask("test", jsonl_dir=d, cache_dir=str(tmp_path / "c"))
    assert sorted(e.answer for e in task) == ["5", "6"]


def test_math_bad_json_line_names_file_and_line(tmp_path):
    p = _write(
        os.path.join(tmp_path, "m.jsonl"),
        [{"problem": "1+1", "solution": "\\boxed{2}"}, "{oops"],
    )
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        load_math_records(p)
    p = _write(os.path.join(tmp_path, "m2.jsonl"), [{"problem": "1+1"}])
    with pytest.raises(ValueError, match=r"m2.jsonl:1 lacks field"):
        load_math_records(p)
