"""tests/test_multi_process.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_multi_process import *  # noqa: F403
