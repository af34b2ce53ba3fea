# A pytest plugin Cairn loads (`-p cairn_test_contexts`) in its coverage run: each test runs in
# a coverage.py dynamic context named after its node id (as pytest-cov's `--cov-context=test`
# does), so the report says which test executed which line. What runs once for many tests —
# imports and module-level code while collecting, session- and package-scoped fixtures — stays
# in the empty context, which Cairn counts as run by every test of the run.
import coverage
import pytest

_test = ""


def _switch(name):
    current = coverage.Coverage.current()
    if current is not None:
        current.switch_context(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _test
    _test = item.nodeid
    _switch(_test)
    try:
        yield
    finally:
        _test = ""
        _switch("")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    shared = fixturedef.scope in ("session", "package")
    if shared:
        _switch("")
    try:
        yield
    finally:
        if shared:
            _switch(_test)
