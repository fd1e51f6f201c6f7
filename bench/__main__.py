"""`python -m bench` (what scripts/bench runs, in the checkout's root)."""

import sys

# Print only: no __pycache__ in the checkout from this process (scripts/bench also passes -B) or the
# processes it starts (bench.cli sets PYTHONDONTWRITEBYTECODE for them).
sys.dont_write_bytecode = True

from bench.cli import main  # noqa: E402

sys.exit(main())
