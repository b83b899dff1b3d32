"""Every tutorial runs to the end: ``tutorials/NN_*.py`` as a subprocess, exit code 0.

Each tutorial ends with its own asserted check, so exit code 0 means the
check passed. The files are found by glob, so tutorials added later are
picked up. ``NPVAE_QUICK=1`` asks them for their quick variant (smaller
samples, fewer steps); ``PYTHONPATH`` holds the repository root, so this works
whether npvae is installed or not.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timeouts import safety_net

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))
# A safety net against a hang, not a speed test: each quick tutorial takes seconds on an
# idle machine; the limit grows with the load and NPVAE_TEST_TIMEOUT_SCALE (tests/timeouts.py).
TIMEOUT_S = 300


def tutorial_env():
    env = dict(os.environ, NPVAE_QUICK="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def test_tutorials_were_found():
    assert len(TUTORIALS) >= 7, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_tutorial_runs(path):
    limit = safety_net(TIMEOUT_S)
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=REPO, env=tutorial_env(),
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{path.name} took more than {limit:.0f} s (raise NPVAE_TEST_TIMEOUT_SCALE "
                    f"on a slow machine)\n{err.stdout or ''}")
    assert proc.returncode == 0, (
        f"{path.name} exited with {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")
    assert "check passed" in proc.stdout, f"{path.name} did not print its 'check passed' line"
