import os

import pytest

from imgclf.parallel import WorkerDiedError, parallel_map


def square(x):
    return x * x


def exit_on_300(x):
    if x == 300:
        os._exit(1)  # as when the system kills a worker
    return x


def test_results_come_back_in_order_from_worker_processes():
    assert list(parallel_map(square, list(range(600)), workers=2, progress=False)) == [x * x for x in range(600)]


def test_a_worker_that_dies_is_an_error_not_a_hang():
    done = []
    with pytest.raises(WorkerDiedError, match=r"worker process died after (\d+) of 600 files.*--workers 1") as raised:
        for result in parallel_map(exit_on_300, list(range(600)), workers=2, progress=False):
            done.append(result)
    assert f"after {len(done)} of 600" in str(raised.value) and len(done) <= 300
