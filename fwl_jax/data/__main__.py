"""`python -m fwl_jax.data --dataset=NAME --data_dir=DIR --vocab_size=N`: prepare a dataset."""

import sys

from fwl_jax.data.prepare import main

sys.exit(main())
