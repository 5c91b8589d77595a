import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import make_class_folder

from imgclf.cli import build_parser
from imgclf.parallel import _MIN_FILES_FOR_PROCESSES, BACKEND_VARIABLE, WorkerDiedError, parallel_map


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


def test_the_thread_backend_gives_the_same_results_from_several_threads(monkeypatch):
    monkeypatch.setenv(BACKEND_VARIABLE, "thread")
    seen = set()

    def square_and_note_thread(x):
        seen.add(threading.get_ident())
        return x * x

    assert list(parallel_map(square_and_note_thread, list(range(600)), workers=2, progress=False)) == [
        x * x for x in range(600)]
    assert threading.get_ident() not in seen


def readme_script(folder, *, guarded: bool, workers: int) -> str:
    """The README's first lines as a script, at top level or under the `__main__` guard."""
    body = [f"m = imgclf.scan({str(folder)!r}, val=0.15, test=0.15, seed=0, workers={workers}, progress=False)",
            "print(f'scanned {len(m.entries)} files')"]
    if guarded:
        body = ['if __name__ == "__main__":', *("    " + line for line in body)]
    return "\n".join(["import imgclf", *body]) + "\n"


def run_script(path, code):
    path.write_text(code)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=path.parent, timeout=300)


@pytest.fixture
def folder_for_processes(tmp_path):
    """300 tiny PNGs: enough that scan reads them in worker processes."""
    assert 3 * 100 >= _MIN_FILES_FOR_PROCESSES
    return make_class_folder(tmp_path / "data", per_class=100, size=8)


def test_an_unguarded_script_is_told_to_add_the_main_guard(folder_for_processes, tmp_path):
    done = run_script(tmp_path / "example.py", readme_script(folder_for_processes, guarded=False, workers=2))
    assert done.returncode == 1
    # Python's resource tracker may add a warning about the dead workers' semaphores after the error.
    error = [line for line in done.stderr.strip().splitlines() if "resource_tracker" not in line][-1]
    assert error.startswith("imgclf.parallel.WorkerDiedError: No worker process could start for 300 files (scan)")
    assert 'Put the script\'s code under `if __name__ == "__main__":`, or pass workers=1' in error
    assert "memory" not in error


@pytest.mark.parametrize("guarded, workers", [(True, 2), (False, 1)], ids=["main guard", "workers=1"])
def test_the_advice_makes_the_script_work(folder_for_processes, tmp_path, guarded, workers):
    done = run_script(tmp_path / "example.py", readme_script(folder_for_processes, guarded=guarded, workers=workers))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scanned 300 files"


def ignores_ctrl_c(_):
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_worker_processes_leave_ctrl_c_to_the_parent():
    # Ctrl-C signals every process of the terminal's group: a worker that took it would print a traceback.
    assert all(parallel_map(ignores_ctrl_c, list(range(600)), workers=2, progress=False))
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # unblocked again here
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_workers_below_1_are_refused_by_the_api_and_every_command(capsys):
    for workers in (0, -2):
        with pytest.raises(ValueError, match=rf"workers must be a whole number of at least 1 \(1 works in this "
                                             rf"process\), or None for one per CPU. Received: workers={workers}"):
            list(parallel_map(square, [1, 2], workers=workers, progress=False))
    assert list(parallel_map(square, [1, 2], workers=None, progress=False)) == [1, 4]
    assert list(parallel_map(square, [1, 2], workers=1, progress=False)) == [1, 4]
    commands = (["scan", "data"], ["audit", "data"], ["train", "data", "--out", "runs/x"], ["augment-preview", "data"],
                ["predict", "runs/x", "a.png"])
    for command in commands:
        for value in ("0", "-2", "two"):
            with pytest.raises(SystemExit):
                build_parser().parse_args([*command, "--workers", value])
            assert (f"imgclf {command[0]}: error: argument --workers: expected a whole number of at least 1 (1 works "
                    f"in this process; leave --workers out for one per CPU). Received: '{value}'") in capsys.readouterr().err
        assert build_parser().parse_args([*command, "--workers", "1"]).workers == 1
        assert build_parser().parse_args(command).workers is None
