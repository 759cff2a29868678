"""Host-side step splitter: text rules, VinePPO sentence rule, token mapping through offsets."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from jaxrl_reason.rollout import steps as S


def _parts(text, rule):
    return [text[a:b] for a, b in S.split_text(text, rule)]


def test_newline_rules():
    text = "Step 1.\n\nStep 2.\n\n\nStep 3"
    assert S.split_text(text, "double_newline") == [(0, 9), (9, 19), (19, 25)]
    assert _parts("a\nb\n\nc\n", "double_newline") == ["a\nb\n\n", "c\n"]
    assert _parts("a\nb\n\nc\n", "newline") == ["a\n", "b\n\n", "c\n"]
    assert S.split_text("", "newline") == [(0, 0)]
    assert _parts("no separator", "double_newline") == ["no separator"]


@pytest.mark.parametrize(
    "text, want",
    [
        # sentence-final period followed by a capital; the newline opens the next step
        (
            "First we add the numbers. Then we divide by two.\nSo the answer is 5.",
            ["First we add the numbers.", " Then we divide by two.", "\nSo the answer is 5."],
        ),
        # a period inside math never splits; a short last part stays on its own
        ("We know $a. B$ is true here ok.\nNext", ["We know $a. B$ is true here ok.", "\nNext"]),
        # a short part (< 20 chars, no final period) merges with the next
        (
            "Let x=2\nThen y = x + 1 = 3 which is odd.",
            ["Let x=2\nThen y = x + 1 = 3 which is odd."],
        ),
        # a lone newline joins the next part
        (
            "A long first sentence here.\n\nB long second sentence here.",
            ["A long first sentence here.", "\n\nB long second sentence here."],
        ),
        # math counts as a 60-character placeholder, so it is not "short"
        ("$$x^2$$\nThe rest of the text.", ["$$x^2$$", "\nThe rest of the text."]),
        # a newline inside display math is protected
        (
            "Compute \\[a\nb\\] now please.\nDone with it all now.",
            ["Compute \\[a\nb\\] now please.", "\nDone with it all now."],
        ),
        # after a one- or two-letter word a period is taken for an abbreviation (the
        # official regex): "e.g." and also "hi." do not end sentences
        (
            "It is e.g. fine and we say hi. Yes indeed.",
            ["It is e.g. fine and we say hi. Yes indeed."],
        ),
        ("We say hello. Yes indeed it is so.", ["We say hello.", " Yes indeed it is so."]),
    ],
)
def test_vineppo_rule(text, want):
    assert _parts(text, "vineppo") == want
    assert "".join(want) == text


def test_token_mapping_hand_offsets():
    text = "ab\n\ncd\n\ne"
    spans = S.split_text(text, "double_newline")  # "ab\n\n", "cd\n\n", "e"
    # tokens: "ab", "\n\nc" (straddles: first char in step 0), "d", "\n\n", "e", EOS (0, 0)
    offsets = [(0, 2), (2, 5), (5, 6), (6, 8), (8, 9), (0, 0)]
    np.testing.assert_array_equal(S.token_segment_ids(spans, offsets), [0, 0, 1, 1, 2, 2])
    # a step that no token starts in disappears and ids stay consecutive
    offsets = [(0, 6), (6, 8), (8, 9)]
    np.testing.assert_array_equal(S.token_segment_ids(spans, offsets), [0, 1, 2])
    offsets = [(0, 5), (5, 9)]
    np.testing.assert_array_equal(S.token_segment_ids(spans, offsets), [0, 1])
    out = S.segment_ids(text, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)], rule="double_newline")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 2])


def _byte_level_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["First we add the numbers.\n\nThen we divide by two.\n\nSo the answer is 5."] * 20
    tok.train_from_iterator(corpus, trainer)
    return tok


def test_real_byte_level_tokenizer_offsets():
    tok = _byte_level_tokenizer()
    text = "First we add 3 and 4.\n\nThen we divide by two.\n\nSo the answer is 3.5."
    enc = tok.encode(text)
    seg = S.segment_ids(text, enc.offsets, rule="double_newline")
    spans = S.split_text(text, "double_newline")
    assert len(spans) == 3 and seg.max() == 2
    assert np.all(np.diff(seg) >= 0)
    # the ByteLevel pre-tokenizer never merges across "\n\n" + letter, so each step's tokens
    # reproduce exactly its text
    for k, (a, b) in enumerate(spans):
        got = "".join(text[s:e] for (s, e), g in zip(enc.offsets, seg, strict=True) if g == k)
        assert got == text[a:b]
    # the sentence rule on the same text and tokens
    seg_v = S.segment_ids(text, enc.offsets, rule="vineppo")
    words = [text[s:e] for s, e in enc.offsets]
    assert seg_v[words.index("Then") - 1] == 1  # the "\n" before "Then" opens step 1


def test_fixed_spo_and_padding():
    np.testing.assert_array_equal(S.fixed_segment_ids(7, 3), [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(
        S.segment_ids(rule="fixed", num_tokens=4, tokens_per_step=2), [0, 0, 1, 1]
    )
    p = [0.95, 0.5, 0.99, 0.8, 0.97, 0.6, 0.3, 0.99, 0.7, 0.98]
    np.testing.assert_array_equal(
        S.segment_ids(rule="spo_chain", token_probs=p, interval=2), [0, 1, 1, 1, 1, 2, 2, 2, 3, 3]
    )
    # interval 1: every candidate is a cut
    np.testing.assert_array_equal(S.spo_chain_cut_points(p, interval=1), [0, 2, 4, 5, 7])
    padded = S.pad_segment_ids([np.array([0, 0, 1]), np.array([0])], 4)
    np.testing.assert_array_equal(padded, [[0, 0, 1, -1], [0, -1, -1, -1]])
    with pytest.raises(ValueError, match="row 0"):
        S.pad_segment_ids([np.zeros(5)], 4)
    with pytest.raises(ValueError, match="unknown rule"):
        S.segment_ids("x", [(0, 1)], rule="sentences")
    with pytest.raises(ValueError, match="offsets"):
        S.segment_ids("x", rule="newline")
