"""tests/admission/test_rolling_window.py on a Redis Cluster."""

from tests.admission.test_rolling_window import *  # noqa: F403
