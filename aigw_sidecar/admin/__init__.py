"""``aigw-admin``: the admin CLI, generated from the KeyManagement service descriptor."""
