"""Shared fixtures live in tests/fixtures/, one module per real server the tests stand on."""

pytest_plugins = [
    "tests.fixtures.twin",
    "tests.fixtures.prometheus",
    "tests.fixtures.sshd",
    "tests.fixtures.vcsim",
    "tests.fixtures.postgres",
    "tests.fixtures.ledgers",
    "tests.fixtures.leaks",
]
