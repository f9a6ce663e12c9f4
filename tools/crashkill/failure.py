"""The failure of a kill-test check (or of the harness itself): the driver
prints it with the cycle and a replay command line, and exits 1."""


class Failure(Exception):
    pass
