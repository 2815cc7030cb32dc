"""tests/admission/test_admission_store.py on a Redis Cluster."""

from tests.admission.test_admission_store import *  # noqa: F403
