import sys

from cvae_jax.cli import main

sys.exit(main())
