"""Jobs forked from the preloaded server: what each sees, what it leaves, how it ends."""

from __future__ import annotations

import signal

from uqbench.bench_processes import run_forked, run_fresh, start_preloaded

PROBE = "forked_probe"  # tests/forked_probe.py, on sys.path as the tests' folder


def test_a_forked_job_sees_the_bench_s_environment_folder_and_command(tmp_path, monkeypatch):
    start_preloaded([PROBE])
    monkeypatch.setenv("UQBENCH_PROBE", "set after the server started")
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "logs" / "job.log"
    status, seconds = run_forked(["3", "more"], log, entry=f"{PROBE}:report")
    assert status == 3 and seconds > 0
    text = log.read_text()
    assert text.startswith("=== ") and f"{PROBE}:report 3 more" in text.splitlines()[0]
    assert "env=set after the server started" in text
    assert f"cwd={tmp_path}" in text and "argv=['3', 'more']" in text


def test_a_job_starts_from_the_server_s_state_not_from_the_previous_job_s(tmp_path):
    start_preloaded([PROBE])
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert run_forked(["0"], first, entry=f"{PROBE}:report")[0] == 0
    assert run_forked([], tmp_path / "dirty.log", entry=f"{PROBE}:dirty")[0] == 0
    assert run_forked(["0"], second, entry=f"{PROBE}:report")[0] == 0
    seen = [p.read_text().splitlines()[-1] for p in (first, second)]
    assert seen[0] == seen[1] and "state=as imported" in seen[1] and "seed=1234" not in seen[1]


def test_a_crashing_job_is_a_status_like_a_fresh_process_s(tmp_path):
    start_preloaded([PROBE])
    status, _ = run_forked([], tmp_path / "crash.log", entry=f"{PROBE}:crash")
    assert status == -signal.SIGSEGV
    # The uqbench command itself, both ways: the same status and the same output.
    forked = run_forked(["fit", "method=nope"], tmp_path / "forked.log")[0]
    fresh = run_fresh(["fit", "method=nope"], tmp_path / "fresh.log")[0]
    assert forked == fresh == 2
    tails = [(tmp_path / f"{k}.log").read_text().splitlines()[1:] for k in ("forked", "fresh")]
    assert tails[0] == tails[1] and "unknown method 'nope'" in "\n".join(tails[0])
