"""The web console: server-rendered admin pages on the admin HTTP listener, under /console/.

Keys list (status toggle, usage against every limit), create key (the secret
shown once), overview, rotate, delete with a typed confirmation, the legacy-key
replace flow, the audit log and budget events. Every action is a call to the
``KeyManagementServicer`` in-process, as the JSON API makes it (``calls.py``), so
validation, audit and errors are the service's own. ``routes.py`` guards the
pages (login with an admin token, sessions, CSRF, security headers);
``pages.py`` renders them with ``markup.py``, which escapes every value.
Static assets (one CSS file, one JS file) are package data in ``static/``.
"""

from __future__ import annotations

from aigw_sidecar.server.console.layout import PREFIX
from aigw_sidecar.server.console.routes import Console, is_console_path

CONSOLE_PATH = f"{PREFIX}/"

__all__ = ["CONSOLE_PATH", "Console", "is_console_path"]
