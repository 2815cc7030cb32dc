"""tests/test_rolling_window.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_rolling_window import *  # noqa: F403
