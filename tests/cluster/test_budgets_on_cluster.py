"""tests/test_budgets.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_budgets import *  # noqa: F403
