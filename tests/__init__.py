"""loopfix's tests. A package so that `from tests.conftest import ...` finds this directory, not
a `tests` package some other distribution installed into site-packages (Ciw ships one).
"""
