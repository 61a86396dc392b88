"""`python -m bench`: run the suite (see bench/run.py)."""

from bench.run import main

main()
