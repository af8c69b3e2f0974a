"""The thread team of fastlstm/_pool.h, driven from C (tests/pool_race.c), where
a worker can be held up at a chosen point: each thread runs each job once."""
import pathlib
import shutil
import subprocess

import pytest

import fastlstm

HERE = pathlib.Path(__file__).parent


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the harness")
def test_a_worker_held_up_outside_a_job_runs_the_next_job_once(tmp_path):
    """Job 1 runs on 2 threads; worker 2 wakes for it anyway and is held up
    between reading the job and acting on it while job 2 (4 threads) is posted.
    When the thread count was read apart from the job, worker 2 ran job 2 as
    job 1's and then again as its own (after its caller had returned)."""
    harness = tmp_path / "pool_race"
    subprocess.run(["gcc", "-O2", "-pthread", "-I", str(pathlib.Path(fastlstm.__file__).parent),
                    str(HERE / "pool_race.c"), "-o", str(harness)], check=True, timeout=120)
    result = subprocess.run([str(harness)], capture_output=True, text=True, check=True,
                            timeout=60)
    calls = [[int(n) for n in line.split()] for line in result.stdout.splitlines()]
    assert calls == [[1, 1, 1, 1],       # job 0, 4 threads
                     [1, 1, 0, 0],       # job 1, 2 threads
                     [1, 1, 1, 1]]       # job 2, 4 threads: worker 2 once
