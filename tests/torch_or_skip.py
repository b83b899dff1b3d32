"""PyTorch for the cross-check tests: skip without it, unless CI says it must be there.

Cross-check modules start with ``torch = import_torch()``. Without PyTorch
(or with a broken install) the module is skipped; with
``NPVAE_REQUIRE_TORCH=1`` (set by ``.ci/run``, which installs the ``torch``
extra) a missing PyTorch is an error, so CI cannot silently skip the proof
that npvae's gradients are autograd's.
"""

import os

import pytest


def import_torch():
    try:
        import torch
    except ImportError as err:
        if os.environ.get("NPVAE_REQUIRE_TORCH") == "1":
            raise ImportError(f"NPVAE_REQUIRE_TORCH=1 but PyTorch cannot be imported ({err}); "
                              "install the extra: python -m pip install -e \".[torch]\"") from err
        pytest.skip(f"PyTorch is not available ({err})", allow_module_level=True)
    return torch
