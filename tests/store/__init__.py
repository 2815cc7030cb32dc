"""Store-level tests: the store clients, the embedded store, store outages and faults."""
