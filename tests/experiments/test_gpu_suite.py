"""benchmarks.gpu_suite --dry-run (every GPU measurement, on CPU); benchmarks.peers' usage."""

import pytest


@pytest.mark.slow  # ~30 s of CPU: compiles a 2-layer model's update and sampler
def test_gpu_suite_dry_run_fills_every_row(capsys):
    from benchmarks.gpu_suite import main

    assert main(["--dry-run", "--impls", "reference", "xla", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("| measurement |") :]
    names = [
        "matmul ceiling",
        "copy bandwidth",
        "token_logprob reference fwd ",
        "token_logprob xla fwd+bwd",
        "policy update MFU",
        "decode batch 1 (scan)",
        "decode batch 1 (unrolled)",
    ]
    for name in names:
        assert f"| {name}" in table, name
    assert "failed" not in table
    assert "MFU" in table and "x floor" in table


def test_peers_without_a_trl_python_says_how_to_get_one_and_exits_0(capsys):
    from benchmarks.peers import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "pip install torch==2.13.0" in out and "--trl-python" in out
