"""Time limits in the tests are safety nets against a hang, never a measure of speed.

``safety_net(seconds)`` is a generous limit for something that takes a few
seconds on an idle machine: ``seconds`` times ``NPVAE_TEST_TIMEOUT_SCALE``
(default 1; raise it on a slow machine), times the load per core when the
machine is busier than its cores (a 2-core CI runner shared with other jobs),
so a loaded machine waits longer instead of failing.
"""

import os

SCALE_ENV = "NPVAE_TEST_TIMEOUT_SCALE"


def scale():
    """``NPVAE_TEST_TIMEOUT_SCALE`` times the load per core (at least 1)."""
    try:
        factor = float(os.environ.get(SCALE_ENV, "1"))
    except ValueError:
        raise ValueError(f"{SCALE_ENV}={os.environ[SCALE_ENV]!r} must be a number") from None
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:  # no load average on this system
        load = 1.0
    return max(factor, 0.0) * max(1.0, load)


def safety_net(seconds):
    """``seconds`` scaled as the module docstring says."""
    return seconds * scale()
