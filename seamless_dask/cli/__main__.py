"""``python -m seamless_dask.cli``: the ``seamless-dask`` command."""

import sys

from .entry import main

sys.exit(main())
