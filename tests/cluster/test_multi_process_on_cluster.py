"""tests/process/test_multi_process.py on a Redis Cluster."""

from tests.process.test_multi_process import *  # noqa: F403
