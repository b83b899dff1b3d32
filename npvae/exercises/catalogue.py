"""The exercises, in the order of the tutorials: ``EXERCISES``, by name.

Each grader module (one per tutorial or pair of tutorials) lists its
exercises in its own ``EXERCISES``; this module only collects them. A new
grader module is one more name in ``MODULES``.
"""

from . import adam, conditional, conv, hvae, iwae, layers, losses, reparam, vae, vq

MODULES = (layers, losses, reparam, adam, vae, iwae, conv, conditional, hvae, vq)

EXERCISES = {ex.name: ex for ex in sorted((ex for module in MODULES for ex in module.EXERCISES),
                                          key=lambda ex: ex.tutorial)}
