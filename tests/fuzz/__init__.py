"""Hostile-image fuzzing for qcow2kit.

Mutants are made from real qemu-made images: structural mutations of the fields the
generated parser finds in them (fields.py, mutate.py) and random bytes. Every
qcow2kit command runs on each mutant in a forked child with a wall-clock limit and
an address-space limit (runner.py), and each outcome is classified: a result, a
clean one-line error, or a defect (traceback, hang, memory blow-up, crash, unclear
or multi-line error, a write to the input).

    PYTHONPATH=tests python -m fuzz --cases 3000          # a short run
    make fuzz                                             # the long run
"""
