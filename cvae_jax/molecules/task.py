"""Moved to `cvae_jax.tasks.molecules` (tasks live in cvae_jax/tasks/); this name stays for code that
imports it."""

import sys

from cvae_jax.tasks import molecules as _molecules

sys.modules[__name__] = _molecules
