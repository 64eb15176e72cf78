"""The resource sampler follows the archive through a restart by re-reading the run folder's server.pid."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from bench.results.run_folder import SERVER_PID_FILE, read_server_pid, write_server_pid
from bench.runs.resources import Sampler, tree_cpu_seconds


def sleeper(children: int) -> subprocess.Popen:
    """A real process with `children` child processes, so each tree is told apart by its size."""
    code = (
        f"import subprocess, sys, time; ps = [subprocess.Popen(['sleep', '60']) for _ in range({children})]; "
        "print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_the_sampler_reads_the_tree_of_whatever_pid_server_pid_holds(tmp_path):
    first, second = sleeper(0), sleeper(2)
    try:
        write_server_pid(tmp_path, first.pid)
        sampler = Sampler(first.pid, None, [], None, None, server_pid_file=tmp_path / SERVER_PID_FILE)
        assert sampler.read().server["server_processes"] == 1
        write_server_pid(tmp_path, second.pid)  # the target started the archive again
        reading = sampler.read()
        assert sampler.server_pid == second.pid and reading.server["server_processes"] == 3
    finally:
        for process in (first, second):
            for child in psutil.Process(process.pid).children():
                child.kill()
            process.kill()
            process.wait()


def test_server_pid_is_replaced_whole_and_absent_reads_none(tmp_path):
    assert read_server_pid(tmp_path / SERVER_PID_FILE) is None
    write_server_pid(tmp_path, 1234)
    write_server_pid(tmp_path, 56789)
    assert read_server_pid(tmp_path / SERVER_PID_FILE) == 56789
    assert [p.name for p in tmp_path.iterdir()] == [SERVER_PID_FILE]


def test_a_trees_cpu_counts_the_children_it_reaped_and_is_zero_once_it_is_gone():
    # The parent reaps a child that did some work, prints its reaped children's CPU seconds, and waits.
    code = (
        "import resource, subprocess, sys, time; "
        "subprocess.run([sys.executable, '-c', 'sum(range(3_000_000))'], check=True); "
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(usage.ru_utime + usage.ru_stime, flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        reaped = float(process.stdout.readline())
        tick = 1 / os.sysconf("SC_CLK_TCK")  # /proc counts whole clock ticks (user and system apart), rusage finer
        assert reaped > 0 and tree_cpu_seconds(process.pid) >= reaped - 2 * tick
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    assert tree_cpu_seconds(process.pid) == 0.0
