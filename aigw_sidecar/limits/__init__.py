"""Limits: the kinds of limit a key can have, reset periods, and budget alerts.

A neutral domain package: ``keys`` (what a key is) and ``admission`` (what a
request may do) both import it, and it imports neither.
"""
