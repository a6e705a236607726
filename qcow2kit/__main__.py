"""`python -m qcow2kit` is the qcow2kit command."""
from .cli import main

main(prog_name="qcow2kit")
