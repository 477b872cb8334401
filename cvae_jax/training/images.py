"""Moved to `cvae_jax.tasks.images` (tasks live in cvae_jax/tasks/); this name stays for code that
imports it."""

import sys

from cvae_jax.tasks import images as _images

sys.modules[__name__] = _images
