"""The console's routes on the admin HTTP application, and the guard in front of them.

``Console.middleware`` runs before every ``/console`` handler: it adds the
security headers, serves loopback clients only when no admin token is
configured, reads (or starts) the session, sends a visitor without a login to
``/console/login``, and refuses a POST from another origin or without the
session's CSRF token. Handlers turn a form or a query into a request message,
make the call through ``KeyCalls`` (the servicer, in-process), and render a page.

A secret is only ever in the body of the POST response that created it (the
page is ``no-store``): never in a URL, a cookie, a redirect or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, cast
from urllib.parse import quote

import grpc
from aiohttp import web

from aigw_sidecar.api.v1 import keys_pb2 as keys_pb
from aigw_sidecar.server.admin_auth import ANONYMOUS, AdminAuthenticator
from aigw_sidecar.server.console import pages
from aigw_sidecar.server.console.calls import KeyCalls, list_keys_with_usage
from aigw_sidecar.server.console.forms import KeyForm, create_request, form_of_key
from aigw_sidecar.server.console.layout import CSRF_FIELD, PREFIX, STATIC, Viewer, key_path, page
from aigw_sidecar.server.console.markup import Markup
from aigw_sidecar.server.console.sessions import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    LoginThrottle,
    Session,
    SessionCodec,
)
from aigw_sidecar.server.http_api import HTTP_OF_GRPC, ApiError, is_loopback, refuse_cross_site

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
LOGIN = f"{PREFIX}/login"
KEYS = f"{PREFIX}/keys"
PAGE_SIZE = 25
HISTORY_DAYS = (30, 90)
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
# What ?notice= may say (never text from the URL itself).
NOTICES = {
    "deleted": "The key was deleted.",
    "replaced": "The legacy key is disabled: requests with its secret are refused. Delete it "
                "once every consumer has switched, or enable it again from the keys list.",
}
CSRF_REFUSED = ("This form expired or did not come from this console (its security token is "
                "missing or wrong). Reload the page and try again.")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_console_path(path: str) -> bool:
    return path == "/" or path == PREFIX or path.startswith(f"{PREFIX}/")


def safe_next(value: str) -> str:
    """A console path to go back to after a form; anything else is the keys list."""
    if (value.startswith(f"{PREFIX}/") and "//" not in value and "\\" not in value
            and value.isprintable()):
        return value
    return KEYS


def is_cross_site(request: web.Request) -> bool:
    """A request another site's page made: the JSON API's Origin check, and Sec-Fetch-Site.

    Under ``Referrer-Policy: no-referrer`` a browser sends ``Origin: null`` with the
    console's own form posts, so "null" passes the Origin check; the browser's
    ``Sec-Fetch-Site`` still says where the form was (and the CSRF token is checked
    after this).
    """
    if request.headers.get("Origin") != "null":
        try:
            refuse_cross_site(request)
        except ApiError:
            return True
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class Console:
    """The console's handlers and guard, bound to the KeyManagement servicer."""

    def __init__(
        self, servicer: object, authenticator: AdminAuthenticator,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._calls = KeyCalls(servicer)
        self._auth = authenticator
        self._sessions = SessionCodec(authenticator.derive_key("console session"), clock_s)
        self._throttle = LoginThrottle()
        folder = resources.files(__package__).joinpath("static")
        self._static = {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._to_console)
        r.add_get(PREFIX, self._to_console)
        r.add_get(f"{PREFIX}/", self._to_keys)
        r.add_get(f"{STATIC}/{{name}}", self._static_file)
        r.add_get(LOGIN, self._login_page)
        r.add_post(LOGIN, self._login)
        r.add_post(f"{PREFIX}/logout", self._logout)
        r.add_get(KEYS, self._keys)
        r.add_get(f"{KEYS}/new", self._new_key)
        r.add_post(f"{KEYS}/new", self._create_key)
        key = f"{KEYS}/{{key_id:[^/]+}}"
        r.add_get(key, self._overview)
        r.add_post(f"{key}/enable", self._enable)
        r.add_post(f"{key}/disable", self._disable)
        r.add_get(f"{key}/delete", self._delete_page)
        r.add_post(f"{key}/delete", self._delete)
        r.add_get(f"{key}/rotate", self._rotate_page)
        r.add_post(f"{key}/rotate", self._rotate)
        r.add_get(f"{key}/replace", self._replace_page)
        r.add_post(f"{key}/replace", self._replace)
        r.add_post(f"{key}/replace/disable", self._replace_disable)
        r.add_get(f"{PREFIX}/audit", self._audit)
        r.add_get(f"{PREFIX}/events", self._events)

    # --- the guard ----------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_console_path(request.path):
            return await handler(request)
        try:
            response = await self._guarded(request, handler)
        except web.HTTPNotFound:
            response = self._problem(request, 404, "Not found", "There is no such page.")
        except web.HTTPMethodNotAllowed:
            response = self._problem(request, 405, "Not allowed",
                                     f"{request.method} is not allowed here.")
        except web.HTTPException as exc:  # e.g. a body over the size limit
            response = self._problem(request, exc.status, exc.reason, exc.reason)
        except Exception:
            log.exception("console: unexpected error on %s %s", request.method, request.path)
            response = self._problem(request, 500, "Internal error",
                                     "Something went wrong; the sidecar's log says what.")
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(f"{STATIC}/") or request.path in ("/", PREFIX):
            return await handler(request)  # public files, and redirects to the console
        if not self._auth.enabled and not is_loopback(request.remote):
            return self._problem(
                request, 403, "Loopback only",
                "No admin token is configured, so the console serves loopback clients only. "
                "Configure AIGW_ADMIN_TOKEN or --admin-token-file to open it to others.",
                anonymous=True,
            )
        session = self._sessions.decode(request.cookies.get(SESSION_COOKIE))
        if session is not None and not self._auth.enabled and session.principal != ANONYMOUS:
            session = None
        fresh = session is None
        if session is None:
            session = self._sessions.new("" if self._auth.enabled else ANONYMOUS)
        request["session"] = session
        if request.method == "POST":
            if is_cross_site(request):
                return self._problem(request, 403, "Refused",
                                     "Requests from another site are refused.")
            form = await request.post()
            given = form.get(CSRF_FIELD)
            if fresh or not isinstance(given, str) or not self._sessions.csrf_ok(session, given):
                log.warning("console: POST %s refused: no valid CSRF token", request.path)
                return self._problem(request, 403, "Refused", CSRF_REFUSED)
            request["form"] = {k: v for k, v in form.items() if isinstance(v, str)}
        if self._auth.enabled and not session.signed_in and request.path != LOGIN:
            response: web.StreamResponse = redirect(
                f"{LOGIN}?next={_quote(request.path_qs)}" if request.method == "GET" else LOGIN
            )
        else:
            response = await handler(request)
        new_session = request.get("new_session")
        if new_session is not None:
            self._set_cookie(request, response, new_session)
        elif fresh:
            self._set_cookie(request, response, session)
        return response

    def _set_cookie(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        response.set_cookie(
            SESSION_COOKIE, self._sessions.encode(session), max_age=SESSION_TTL_S,
            path=PREFIX, httponly=True, samesite="Strict", secure=request.secure,
        )

    def _viewer(self, request: web.Request) -> Viewer:
        session: Session = request["session"]
        new: Session | None = request.get("new_session")
        shown = new or session
        return Viewer(shown.principal, self._sessions.csrf_token(shown), self._auth.enabled)

    def _html(
        self, request: web.Request, title: str, body: Markup, *, status: int = 200,
        section: str = "", viewer: Viewer | None = None,
    ) -> web.Response:
        text = page(title, body, viewer or self._viewer(request), section)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    def _problem(
        self, request: web.Request, status: int, title: str, message: str, *,
        anonymous: bool = False,
    ) -> web.Response:
        viewer = Viewer("", "", False) if anonymous or "session" not in request else None
        return self._html(request, title, pages.problem(title, message), status=status,
                          viewer=viewer)

    def _api_problem(self, request: web.Request, exc: ApiError) -> web.Response:
        status = HTTP_OF_GRPC.get(exc.code, 500)
        title = "Not found" if exc.code is grpc.StatusCode.NOT_FOUND else "Could not do that"
        return self._problem(request, status, title, exc.message)

    def _principal(self, request: web.Request) -> str:
        session: Session = request["session"]
        return session.principal

    async def _call(self, request: web.Request, rpc: str, message: Any) -> Any:
        return await self._calls.call(rpc, message, self._principal(request))

    # --- plain routes -------------------------------------------------------------------

    async def _to_console(self, request: web.Request) -> web.Response:
        return redirect(f"{PREFIX}/")

    async def _to_keys(self, request: web.Request) -> web.Response:
        return redirect(KEYS)

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=STATIC_FILES[name],
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    # --- login --------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.Response:
        session: Session = request["session"]
        if not self._auth.enabled or session.signed_in:
            return redirect(KEYS)
        next_path = safe_next(request.query.get("next", ""))
        return self._html(request, "Sign in", pages.login(self._viewer(request), "", next_path))

    async def _login(self, request: web.Request) -> web.Response:
        if not self._auth.enabled:
            return redirect(KEYS)
        form: dict[str, str] = request["form"]
        address = request.remote or "unknown"
        next_path = safe_next(form.get("next", ""))
        wait = self._throttle.retry_after_s(address)
        if wait:
            log.warning("console: login from %s refused: too many failed attempts", address)
            response = self._problem(
                request, 429, "Too many attempts",
                f"Too many failed sign-ins from your address. Try again in {wait:.0f} seconds.",
            )
            response.headers["Retry-After"] = f"{wait:.0f}"
            return response
        token = form.get("token", "").strip()
        principal = self._auth.principal_of([("authorization", f"Bearer {token}")])
        if principal is None:
            self._throttle.failed(address)
            log.warning("console: failed sign-in from %s", address)
            body = pages.login(self._viewer(request), "That admin token is not valid.", next_path)
            return self._html(request, "Sign in", body, status=401)
        self._throttle.succeeded(address)
        log.info("console: %s signed in from %s", principal, address)
        request["new_session"] = self._sessions.new(principal)  # a new nonce, too
        return redirect(next_path)

    async def _logout(self, request: web.Request) -> web.Response:
        request["new_session"] = self._sessions.new("")
        return redirect(LOGIN if self._auth.enabled else KEYS)

    # --- keys list and toggles ----------------------------------------------------------

    async def _keys(self, request: web.Request) -> web.Response:
        q = request.query
        filters = {name: q.get(name, "").strip() for name in (
            "name", "workspace", "project", "environment", "status", "page_token")}
        status_value = filters["status"]
        listing = keys_pb.ListKeysRequest(
            workspace=filters["workspace"], project=filters["project"],
            environment=filters["environment"], page_size=PAGE_SIZE,
            page_token=filters["page_token"],
        )
        if status_value in keys_pb.KeyStatus.keys():
            listing.status = cast("keys_pb.KeyStatus", keys_pb.KeyStatus.Value(status_value))
        message = NOTICES.get(q.get("notice", ""), "")
        try:
            found = await list_keys_with_usage(
                self._calls, listing, filters["name"], self._principal(request)
            )
        except ApiError as exc:
            body = pages.problem("API keys", exc.message)
            return self._html(request, "API keys", body,
                              status=HTTP_OF_GRPC.get(exc.code, 500), section="keys")
        body = pages.keys_list(self._viewer(request), found, filters, request.path_qs, message)
        return self._html(request, "API keys", body, section="keys")

    async def _enable(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, "EnableKey", keys_pb.EnableKeyRequest)

    async def _disable(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, "DisableKey", keys_pb.DisableKeyRequest)

    async def _set_enabled(self, request: web.Request, rpc: str, message: Any) -> web.Response:
        try:
            await self._call(request, rpc, message(key_id=request.match_info["key_id"]))
        except ApiError as exc:
            return self._api_problem(request, exc)
        return redirect(safe_next(request["form"].get("return", "")))

    # --- create -------------------------------------------------------------------------

    async def _new_key(self, request: web.Request) -> web.Response:
        body = pages.key_form(self._viewer(request), KeyForm(), action=f"{KEYS}/new",
                              title="Create API key")
        return self._html(request, "Create API key", body, section="keys")

    async def _create_key(self, request: web.Request) -> web.Response:
        form = KeyForm(values=_form_values(request))
        created, status = await self._create(request, form)
        if created is None:
            body = pages.key_form(self._viewer(request), form, action=f"{KEYS}/new",
                                  title="Create API key")
            return self._html(request, "Create API key", body, status=status, section="keys")
        body = pages.secret_shown(self._viewer(request), created.key, created.secret,
                                  title="API key created")
        return self._html(request, "API key created", body, section="keys")

    async def _create(
        self, request: web.Request, form: KeyForm
    ) -> tuple[keys_pb.CreateKeyResponse | None, int]:
        """The created key, or None and the status with the errors set on ``form``."""
        message = create_request(form)
        if message is None:
            return None, 400
        try:
            reply: keys_pb.CreateKeyResponse = await self._call(request, "CreateKey", message)
        except ApiError as exc:
            form.error_from_service(
                exc.message, taken=exc.code is grpc.StatusCode.ALREADY_EXISTS
            )
            return None, HTTP_OF_GRPC.get(exc.code, 500)
        return reply, 200

    # --- overview -----------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.Response:
        key_id = request.match_info["key_id"]
        try:
            reply = await self._call(
                request, "GetKeyOverview", keys_pb.GetKeyOverviewRequest(key_id=key_id)
            )
        except ApiError as exc:
            return self._api_problem(request, exc)
        history = {}
        for days in HISTORY_DAYS:
            try:
                found = await self._call(
                    request, "GetKeyUsageHistory",
                    keys_pb.GetKeyUsageHistoryRequest(key_id=key_id, days=days),
                )
            except ApiError as exc:
                log.warning("console: no usage history for %s: %s", key_id, exc.message)
                break
            history[days] = list(found.days)
        body = pages.overview(self._viewer(request), reply.overview, history or None)
        return self._html(request, reply.overview.key.name, body, section="keys")

    async def _get_key(self, request: web.Request) -> keys_pb.ApiKey:
        reply = await self._call(
            request, "GetKey", keys_pb.GetKeyRequest(key_id=request.match_info["key_id"])
        )
        key: keys_pb.ApiKey = reply.key
        return key

    # --- delete -------------------------------------------------------------------------

    async def _delete_page(self, request: web.Request) -> web.Response:
        try:
            key = await self._get_key(request)
        except ApiError as exc:
            return self._api_problem(request, exc)
        notice = request.query.get("notice", "")
        body = pages.delete_confirm(self._viewer(request), key, "", NOTICES.get(notice, ""),
                                    replaced=notice == "replaced" and key.legacy)
        return self._html(request, f"Delete {key.name}", body, section="keys")

    async def _delete(self, request: web.Request) -> web.Response:
        try:
            key = await self._get_key(request)
            if request["form"].get("confirm_name", "") != key.name:
                body = pages.delete_confirm(
                    self._viewer(request), key,
                    "The name you typed does not match the key's name; nothing was deleted.", "",
                )
                return self._html(request, f"Delete {key.name}", body, status=400,
                                  section="keys")
            await self._call(request, "DeleteKey", keys_pb.DeleteKeyRequest(key_id=key.key_id))
        except ApiError as exc:
            return self._api_problem(request, exc)
        return redirect(f"{KEYS}?notice=deleted")

    # --- rotate -------------------------------------------------------------------------

    async def _rotate_page(self, request: web.Request) -> web.Response:
        try:
            key = await self._get_key(request)
        except ApiError as exc:
            return self._api_problem(request, exc)
        if key.legacy:
            return redirect(key_path(key.key_id, "replace"))
        body = pages.rotate_confirm(self._viewer(request), key, "")
        return self._html(request, f"Rotate {key.name}", body, section="keys")

    async def _rotate(self, request: web.Request) -> web.Response:
        form: dict[str, str] = request["form"]
        try:
            key = await self._get_key(request)
            if form.get("current", "") != key.masked_secret:
                # The page was shown for another secret: a resent form must not rotate twice.
                body = pages.rotate_confirm(
                    self._viewer(request), key,
                    "The secret changed since this page was shown (already rotated?); nothing "
                    "was rotated. Rotate again only if you mean to.",
                )
                return self._html(request, f"Rotate {key.name}", body, status=409,
                                  section="keys")
            grace = form.get("grace_period_s", "0")
            reply = await self._call(request, "RotateKeySecret", keys_pb.RotateKeySecretRequest(
                key_id=key.key_id, grace_period_s=int(grace) if grace.isdigit() else -1,
            ))
        except ApiError as exc:
            return self._api_problem(request, exc)
        body = pages.secret_shown(self._viewer(request), reply.key, reply.secret,
                                  title=f"New secret for {reply.key.name}")
        return self._html(request, "New secret", body, section="keys")

    # --- legacy replace -----------------------------------------------------------------

    async def _legacy(self, request: web.Request) -> keys_pb.ApiKey | web.Response:
        try:
            key = await self._get_key(request)
        except ApiError as exc:
            return self._api_problem(request, exc)
        if not key.legacy:
            return self._problem(request, 400, "Not a legacy key",
                                 f"{key.name} is not a legacy key: rotate its secret instead.")
        return key

    async def _replace_page(self, request: web.Request) -> web.Response:
        legacy = await self._legacy(request)
        if isinstance(legacy, web.Response):
            return legacy
        form = form_of_key(legacy, f"{legacy.name}-new")
        return self._replace_form(request, legacy, form, 200)

    def _replace_form(
        self, request: web.Request, legacy: keys_pb.ApiKey, form: KeyForm, status: int
    ) -> web.Response:
        body = pages.key_form(
            self._viewer(request), form, action=key_path(legacy.key_id, "replace"),
            title=f"Replace legacy key {legacy.name}", intro=pages.replace_intro(legacy),
            submit="Create the new key", workspace_fixed=True,
        )
        return self._html(request, "Replace legacy key", body, status=status, section="keys")

    async def _replace(self, request: web.Request) -> web.Response:
        legacy = await self._legacy(request)
        if isinstance(legacy, web.Response):
            return legacy
        form = KeyForm(values={**_form_values(request), "workspace": legacy.workspace})
        created, status = await self._create(request, form)
        if created is None:
            return self._replace_form(request, legacy, form, status)
        body = pages.secret_shown(
            self._viewer(request), created.key, created.secret, title="New key created",
            after=pages.replace_after(self._viewer(request), legacy),
        )
        return self._html(request, "New key created", body, section="keys")

    async def _replace_disable(self, request: web.Request) -> web.Response:
        legacy = await self._legacy(request)
        if isinstance(legacy, web.Response):
            return legacy
        try:
            await self._call(request, "DisableKey", keys_pb.DisableKeyRequest(key_id=legacy.key_id))
        except ApiError as exc:
            return self._api_problem(request, exc)
        return redirect(f"{key_path(legacy.key_id, 'delete')}?notice=replaced")

    # --- audit, events ------------------------------------------------------------------

    async def _audit(self, request: web.Request) -> web.Response:
        key_id = request.query.get("key_id", "").strip()
        token = request.query.get("page_token", "")
        try:
            reply = await self._call(request, "ListAuditEntries", keys_pb.ListAuditEntriesRequest(
                key_id=key_id, page_size=50, page_token=token))
        except ApiError as exc:
            if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
                return self._api_problem(request, exc)
            body = pages.audit_log([], key_id, exc.message, "")
            return self._html(request, "Audit log", body, status=400, section="audit")
        body = pages.audit_log(reply.entries, key_id, "", reply.next_page_token)
        return self._html(request, "Audit log", body, section="audit")

    async def _events(self, request: web.Request) -> web.Response:
        key_id = request.query.get("key_id", "").strip()
        after = request.query.get("after", "")
        try:
            reply = await self._call(request, "ListEvents", keys_pb.ListEventsRequest(
                key_id=key_id, after=after, page_size=50))
        except ApiError as exc:
            if exc.code is not grpc.StatusCode.INVALID_ARGUMENT:
                return self._api_problem(request, exc)
            body = pages.budget_events([], key_id, exc.message, "")
            return self._html(request, "Budget events", body, status=400, section="events")
        body = pages.budget_events(reply.events, key_id, "", reply.next_cursor)
        return self._html(request, "Budget events", body, section="events")


def _form_values(request: web.Request) -> dict[str, str]:
    form: dict[str, str] = request["form"]
    return {k: v for k, v in form.items() if k != CSRF_FIELD}


def _quote(path: str) -> str:
    return quote(path, safe="/")
