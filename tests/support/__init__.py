"""Test infrastructure shared by the suites that run `ringcast serve` as a child process.

Imported as ``tests.support`` (the repository root is on ``sys.path``): each suite is
its own top-level package under pytest, so a relative import cannot reach here.
"""
