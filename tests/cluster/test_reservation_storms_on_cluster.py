"""tests/admission/test_reservation_storms.py on a Redis Cluster."""

from tests.admission.test_reservation_storms import *  # noqa: F403
