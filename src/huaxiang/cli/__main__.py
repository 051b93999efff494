"""`python -m huaxiang.cli …`: the same as the `huaxiang` command."""
from . import main

main()
