"""Admission: decisions, deny reasons, reset periods and the admission service."""
