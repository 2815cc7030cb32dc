"""tests/test_reservation_storms.py on a Redis Cluster (fixtures: tests/cluster/conftest.py)."""

from tests.test_reservation_storms import *  # noqa: F403
