"""GSM8K from the shared JSONL through the tfds array_record path (no TensorFlow)."""

import json
import os
import sys

import numpy as np
import pytest

from jaxrl_reason.data import Gsm8kTask, prepare_gsm8k_local


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gsm8k_cache"))


@pytest.fixture(scope="module")
def splits(gsm8k_dir, cache_dir):
    return {
        s: Gsm8kTask(s, source="local", jsonl_dir=gsm8k_dir, cache_dir=cache_dir)
        for s in ("train", "test")
    }


def test_sizes_and_array_record_files(splits, gsm8k_dir, cache_dir):
    assert len(splits["train"]) == 7473 and len(splits["test"]) == 1319
    data_dir = prepare_gsm8k_local(gsm8k_dir, cache_dir)
    files = os.listdir(os.path.join(data_dir, "gsm8k", "1.0.0"))
    assert any(".array_record" in f for f in files), files
    assert "tensorflow" not in sys.modules


def test_records_match_the_jsonl(splits, gsm8k_dir):
    with open(os.path.join(gsm8k_dir, "test.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    want = {r["question"]: r["answer"].split("####")[-1].strip() for r in lines}
    got = {e.prompt: e.answer for e in splits["test"]}
    assert got == want


def test_every_gold_answer_verifies_against_itself(splits):
    for task in splits.values():
        exs = list(task)
        responses = [f"{e.meta['solution']}" for e in exs]  # the reference solution, "#### N"
        out = task.verify_batch(responses, exs)
        assert out.dtype == np.float32 and out.shape == (len(exs),)
        assert out.min() == 1.0, [e.answer for e, o in zip(exs, out, strict=True) if o < 1]


def test_conversion_is_cached(gsm8k_dir, cache_dir, splits):
    d1 = prepare_gsm8k_local(gsm8k_dir, cache_dir)
    stamp = os.path.getmtime(os.path.join(d1, "PREPARED"))
    d2 = prepare_gsm8k_local(gsm8k_dir, cache_dir)
    assert d1 == d2 and os.path.getmtime(os.path.join(d2, "PREPARED")) == stamp
    assert len(os.listdir(cache_dir)) == 2  # the prepared dataset and the lock file


def test_small_subset_and_prompt(gsm8k_dir, cache_dir, splits):
    t = Gsm8kTask("test", jsonl_dir=gsm8k_dir, cache_dir=cache_dir, num_examples=5)
    assert len(t) == 5 and t[0] == splits["test"][0]
    msgs = t.build_prompt(t[0])
    assert "####" in msgs[0]["content"]
    assert t.verify("blah\n#### " + t[0].answer, t[0]) == 1.0


def test_local_source_needs_paths(tmp_path):
    with pytest.raises(ValueError, match="cache_dir"):
        Gsm8kTask("test", source="local", jsonl_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        prepare_gsm8k_local(str(tmp_path), str(tmp_path / "c"))


def test_eval_pipeline_on_a_small_subset(gsm8k_dir, cache_dir, splits):
    # What an evaluation does with a model's outputs: verify + extraction coverage.
    from jaxrl_reason.rewards import extraction_stats

    t = Gsm8kTask("test", jsonl_dir=gsm8k_dir, cache_dir=cache_dir, num_examples=8)
    exs = list(t)
    responses = (
        [
            exs[0].meta["solution"],  # right, "#### N"
            f"The answer is {exs[1].answer}.",  # right, natural language
            f"#### {int(exs[2].answer.replace(',', '')) + 1}",  # wrong
            "I don't know.",  # no answer
        ]
        + [e.meta["solution"] for e in exs[4:]]
    )
    acc = t.verify_batch(responses, exs)
    np.testing.assert_array_equal(acc, [1, 1, 0, 0, 1, 1, 1, 1])
    stats = extraction_stats(responses, "auto")
    assert stats["coverage"] == 7 / 8 and stats["method/answer_is"] == 1 / 8


def test_catalog_builder_reads_the_local_copy(gsm8k_dir, cache_dir, splits):
    # source="tfds" goes through the catalog's own `gsm8k` builder; pointed at the prepared
    # local copy it reads it as its own (no download), record for record.
    data_dir = prepare_gsm8k_local(gsm8k_dir, cache_dir)
    t = Gsm8kTask("test", source="tfds", data_dir=data_dir)
    assert len(t) == 1319
    assert [t[i] for i in (0, 7, 1318)] == [splits["test"][i] for i in (0, 7, 1318)]


def test_catalog_builder_can_make_its_download_manager(tmp_path):
    # The online path downloads through the catalog builder. In tfds 4.9.10 making its
    # download manager looks up the builder's source file, which fails without an optional
    # package for builders outside tfds; the override must keep that step working offline.
    import tensorflow_datasets as tfds

    from jaxrl_reason.data.gsm8k import _catalog_builder_cls

    builder = _catalog_builder_cls()(data_dir=str(tmp_path), file_format="array_record")
    assert builder.name == "gsm8k" and "annotation" in builder.info.features
    dl = builder._make_download_manager(
        download_dir=str(tmp_path / "dl"), download_config=tfds.download.DownloadConfig()
    )
    assert dl is not None
