"""Benchmarks of npvae: speed against PyTorch's VAE example, an epoch's profile, the test suite.

Each script runs with one command from the repository root, for instance
``python benchmarks/compare_torch.py --epochs 3``, prints a table and writes
``benchmarks/results/<name>.json``. See ``benchmarks/README.md``.
"""
