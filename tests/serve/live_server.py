"""A real ``stmgt serve`` process on a free loopback port, for the tests that talk to it over HTTP."""

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(runs, db, port, *extra, env=None) -> subprocess.Popen:
    """``stmgt serve RUNS --db DB --port PORT EXTRA...`` (one run folder or a list), once ``/readyz`` answers 200."""
    runs = runs if isinstance(runs, (list, tuple)) else [runs]
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    e["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + e.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "stmgt", "serve", *map(str, runs), "--db", str(db), "--port",
                             str(port), *extra], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not become ready in 120 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
