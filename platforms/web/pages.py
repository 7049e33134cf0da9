"""Yibao's own pages: server-rendered, over the same conversation as every chat.

A page's form becomes an ``Inbound`` for the user's own chat key (``from_page``), run through the
same ``handle`` as their chat messages, and the page shows the replies: so the ID number's checks,
the platform lookup, the SMS-code limits, the lockouts and the erasure are the dialogs' own, one
implementation. When a page changes something (a bind, the alert, an unbind), the user's chat is
told through its platform's outlet (``notify``), so the two never disagree.

Who is asking: a session cookie (``Secure``, ``HttpOnly``, ``SameSite=Lax``, path ``/web``), opened
by one of
- a single-use link from ``/web`` in the chat (``LINK``), exchanged at once for the cookie and a 303
  to the account, so the token stays neither in the address bar nor in the history;
- the Telegram Mini App's ``initData`` (``TELEGRAM_ENTRY`` posts it to ``TELEGRAM_SESSION``);
- WeChat's or WeCom's OAuth (``WECHAT_ENTRY``, ``WECOM_ENTRY``), through an ``OAuthIdentity``.

Every response carries a strict CSP (no script at all, except on the Telegram entry: Telegram's
script and one inline script with a nonce), ``nosniff``, ``no-referrer`` and ``no-store``. Every
form carries the session's CSRF token, compared in constant time; a POST from another origin is
refused. Nothing personal goes into a URL or a log line. Errors are pages in the user's language.
Everything works without JavaScript but the Telegram hand-shake.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dialogs.amounts import format_money
from dialogs.i18n import Catalogs, Translator, normalize_locale
from dialogs.masking import mask_id_number
from dialogs.models import Button, Inbound, Reply, State, UserKey, UserState
from dialogs.ports import StoreUnavailable
from platforms import web
from platforms.web.oauth import OAuthIdentity
from platforms.web.state import PageSession, WebState
from platforms.web.telegram import telegram_user

log = logging.getLogger(__name__)

Handle = Callable[[Inbound], Awaitable[Sequence[Reply]]]
Peek = Callable[[UserKey], Awaitable[UserState]]
Notify = Callable[[UserKey, tuple[Reply, ...]], Awaitable[None]]

SESSION_COOKIE = "yb_session"
STATE_COOKIE = "yb_oauth"
MAX_BODY = 16 * 1024
_BIND_STATES = {
    State.BIND_NAME: "identity",
    State.BIND_ID: "identity",
    State.BIND_PLATFORM: "platform",
    State.BIND_CARD: "card",
    State.BIND_FACE: "face",
    State.BIND_CODE: "code",
}
_BIND_SAYS = ("/bind", "/resend", "/cancel", "/facecheck", "/platform ")
_ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_TELEGRAM_SCRIPT = "https://telegram.org/js/telegram-web-app.js"
_TELEGRAM_FRAMES = "https://web.telegram.org"


_URL = re.compile(r"https?://[^\s<>\"'，。；）]+")


def linkify(text: str) -> Markup:
    """A reply's line, escaped, with its http(s) addresses as links (a face check's page): the
    address is escaped as the text around it, so nothing in it becomes markup."""
    out, last = Markup(""), 0
    for m in _URL.finditer(text):
        out += escape(text[last : m.start()])
        out += Markup('<a href="{0}" rel="noopener noreferrer">{0}</a>').format(m.group(0))
        last = m.end()
    return out + escape(text[last:])


@cache
def environment() -> Environment:
    """The pages' templates, autoescaped (every value is text unless marked safe on purpose)."""
    env = Environment(
        loader=PackageLoader("platforms.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["linkify"] = linkify
    return env


@cache
def _css() -> bytes:
    from importlib import resources

    return (resources.files("platforms.web") / "static" / "yibao.css").read_bytes()


@dataclass(frozen=True, slots=True)
class PageSettings:
    public_url: str | None = None
    """``[web] public_url``: the origin OAuth comes back to; unset: the address asked for (the demo)."""
    max_age_seconds: int = 3600
    session_seconds: int = 1800
    default_locale: str = "zh"
    secure_cookies: bool = True
    link_per_minute: int = 30
    """Link, Mini App and OAuth hand-shakes per client address per minute."""
    posts_per_minute: int = 60
    """Form posts per user per minute."""
    verification_files: Mapping[str, str] = field(default_factory=dict)
    """WeChat's and WeCom's domain-check files (``MP_verify_*.txt``, ``WW_verify_*.txt``) and their
    contents, served at the root."""


class PageError(Exception):
    """Answer with the error page of this status."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = dict(headers or {})


def security_headers(*, nonce: str | None = None) -> dict[str, str]:
    """The headers every page response carries. ``nonce``: the Telegram entry, the one page with
    scripts (Telegram's own, and one inline script with this nonce), which Telegram Web frames."""
    csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
    if nonce is None:
        csp += "frame-ancestors 'none'"
    else:
        csp += f"script-src 'nonce-{nonce}' {_TELEGRAM_SCRIPT}; connect-src 'self'; frame-ancestors {_TELEGRAM_FRAMES}"
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    if nonce is None:
        headers["X-Frame-Options"] = "DENY"
    return headers


def accepted_locale(header: str | None) -> str | None:
    """The first supported language of an ``Accept-Language`` header (by order; q-values ignored
    but ``q=0``)."""
    for part in (header or "").split(",")[:10]:
        tag, _, params = part.strip().partition(";")
        if params.strip().replace(" ", "") in ("q=0", "q=0.0"):
            continue
        found = normalize_locale(tag.strip())
        if found is not None:
            return found
    return None


@dataclass
class _Ctx:
    """One request's view: who (if anyone), in which language."""

    request: Request
    locale: str
    t: Translator
    session: PageSession | None = None
    state: UserState | None = None
    cookies: list[tuple[str, str, str]] = field(default_factory=list)
    """Cookies to set: (name, value, path); an empty value deletes."""


class WebPages:
    def __init__(
        self,
        *,
        state: WebState,
        handle: Handle,
        peek: Peek,
        notify: Notify,
        catalogs: Catalogs,
        settings: PageSettings,
        telegram_token: str | None = None,
        identities: Mapping[str, OAuthIdentity] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.handle = handle
        self.peek = peek
        self.notify = notify
        self.catalogs = catalogs
        self.settings = settings
        self.telegram_token = telegram_token
        self.identities: dict[str, OAuthIdentity] = dict(identities or {})
        """``wx`` and ``wecom``: who opened ``WECHAT_ENTRY`` / ``WECOM_ENTRY`` (none: 404)."""
        self.clock = clock
        self.env = environment()

    def routes(self) -> list[BaseRoute]:
        """The pages' routes, for the process's one HTTP server. Every method reaches the handler,
        so a wrong one is a 405 page, not a bare text."""
        pages: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = [
            (web.PREFIX, self._home),
            (web.LINK, self._link),
            (web.TELEGRAM_ENTRY, self._telegram_entry),
            (web.TELEGRAM_SESSION, self._telegram_session),
            (web.WECHAT_ENTRY, self._wechat),
            (web.WECOM_ENTRY, self._wecom),
            (web.ACCOUNT, self._account),
            (web.BIND, self._bind),
            (web.ALERT, self._alert),
            (web.UNBIND, self._unbind),
            (f"{web.STATIC}/yibao.css", self._stylesheet),
            (web.PREFIX + "/{rest:path}", self._not_found),
        ]
        routes: list[BaseRoute] = [
            Route(path, endpoint, methods=_ANY_METHOD, name=f"web:{path}") for path, endpoint in pages
        ]
        for name, content in sorted(self.settings.verification_files.items()):
            routes.append(
                Route(f"/{name}", self._verification(content), methods=["GET", "HEAD"], name=f"web:{name}")
            )
        return routes

    @staticmethod
    def _verification(content: str) -> Callable[[Request], Awaitable[Response]]:
        """A domain-check file: what WeChat's or WeCom's console asked to find there, nothing else."""

        async def serve(_request: Request) -> Response:
            return PlainTextResponse(
                content, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
            )

        return serve

    # -- the frame: language, errors, rendering --------------------------------------------------

    def _ctx(self, request: Request, state: UserState | None = None) -> _Ctx:
        chosen = state.profile.lang if state is not None else None
        locale = (
            chosen or accepted_locale(request.headers.get("accept-language")) or self.settings.default_locale
        )
        return _Ctx(request, locale, self.catalogs.get(locale), state=state)

    def _render(
        self,
        ctx: _Ctx,
        template: str,
        title: str,
        *,
        status: int = 200,
        nonce: str | None = None,
        **values: Any,
    ) -> HTMLResponse:
        paths = {
            "account": web.ACCOUNT,
            "bind": web.BIND,
            "alert": web.ALERT,
            "unbind": web.UNBIND,
            "tg_session": web.TELEGRAM_SESSION,
        }
        values.setdefault("replies", ())
        bound = ctx.state is not None and ctx.state.profile.binding is not None
        values.setdefault("nav", ctx.session is not None and bound)
        html = self.env.get_template(template).render(
            _=ctx.t.gettext,
            locale=ctx.locale,
            title=title,
            paths=paths,
            static=web.STATIC,
            csrf=ctx.session.csrf if ctx.session is not None else "",
            nonce=nonce,
            **values,
        )
        response = HTMLResponse(html, status_code=status, headers=security_headers(nonce=nonce))
        for name, value, path in ctx.cookies:
            self._cookie(response, name, value, path)
        return response

    def _cookie(
        self, response: Response, name: str, value: str, path: str, max_age: int | None = None
    ) -> None:
        if not value:
            response.delete_cookie(
                name, path=path, secure=self.settings.secure_cookies, httponly=True, samesite="lax"
            )
            return
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )

    def error(self, ctx: _Ctx, status: int, headers: Mapping[str, str] | None = None) -> HTMLResponse:
        t = ctx.t
        titles = {
            400: t.gettext("That request was not understood"),
            403: t.gettext("Not allowed"),
            404: t.gettext("There is no such page"),
            405: t.gettext("This page cannot be used that way"),
            429: t.gettext("Too many requests"),
            503: t.gettext("Not available right now"),
        }
        lines = {
            400: t.gettext("Go back and try again."),
            403: t.gettext(
                "This page did not accept the request: your session may have ended, or the form came "
                "from elsewhere. Send /web in the chat for a new link."
            ),
            404: t.gettext("Send /web in the chat for a link to your page."),
            405: t.gettext("Go back and use the page's own buttons."),
            429: t.gettext("Wait a minute, then try again."),
            503: t.gettext("Yibao cannot reach what it needs just now. Please try again in a moment."),
        }
        response = self._render(
            ctx, "message.html", titles.get(status, str(status)), status=status, lines=[lines.get(status, "")]
        )
        response.headers.update(headers or {})
        return response

    async def _guarded(
        self, request: Request, methods: tuple[str, ...], page: Callable[[_Ctx], Awaitable[Response]]
    ) -> Response:
        ctx = self._ctx(request)
        method = "GET" if request.method == "HEAD" else request.method
        if method not in methods:
            return self.error(ctx, 405, {"Allow": ", ".join(methods)})
        try:
            if method == "POST" and not self._same_origin(request):
                raise PageError(403)
            return await page(ctx)
        except PageError as e:
            return self.error(ctx, e.status, e.headers)
        except StoreUnavailable:
            return self.error(ctx, 503, {"Retry-After": "5"})

    def _same_origin(self, request: Request) -> bool:
        """A form posted from this server's own pages. Browsers say where a request comes from in
        ``Sec-Fetch-Site`` (``same-origin``); without it, in ``Origin`` (which our ``no-referrer``
        policy makes ``null`` for forms, telling nothing); with neither (an older browser), the CSRF
        token alone decides."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return True
        allowed = {request.headers.get("host", "")}
        if self.settings.public_url:
            allowed.add(urlsplit(self.settings.public_url).netloc)
        return urlsplit(origin).netloc in allowed

    async def _form(self, request: Request) -> dict[str, str]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise PageError(400)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise PageError(400)
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise PageError(400) from None
        return {k: v[0] for k, v in parsed.items() if v}

    async def _limit(self, bucket: str, limit: int) -> None:
        if not await self.state.allow(bucket, limit, 60):
            raise PageError(429, {"Retry-After": "60"})

    def _client(self, request: Request) -> str:
        return f"ip:{request.client.host if request.client else '?'}"

    async def _who(self, ctx: _Ctx, *, post: dict[str, str] | None = None) -> PageSession:
        """The session's user (a 403 page without one), its state peeked, the language theirs; for a
        POST also the CSRF token checked and the user's rate limit counted."""
        session_id = ctx.request.cookies.get(SESSION_COOKIE, "")
        session = (
            await self.state.session(session_id, self.settings.session_seconds)
            if 0 < len(session_id) <= 100
            else None
        )
        if session is None:
            raise PageError(403)
        ctx.session = session
        await self._refresh(ctx)  # from here on, even a refusal speaks the user's language
        if post is not None:
            if not hmac.compare_digest(post.get("csrf", "").encode(), session.csrf.encode()):
                raise PageError(403)
            await self._limit(f"u:{session.user}", self.settings.posts_per_minute)
        return session

    async def _refresh(self, ctx: _Ctx) -> UserState:
        assert ctx.session is not None
        state = await self.peek(ctx.session.user)
        ctx.state = state
        fresh = self._ctx(ctx.request, state)
        ctx.locale, ctx.t = fresh.locale, fresh.t
        return state

    async def _say(self, ctx: _Ctx, text: str) -> tuple[Reply, ...]:
        assert ctx.session is not None
        return tuple(
            await self.handle(Inbound(user=ctx.session.user, text=text, locale=ctx.locale, from_page=True))
        )

    async def _tell_chat(self, ctx: _Ctx, replies: Sequence[Reply], *, erased: bool = False) -> None:
        """Say in the user's chat what the page did, in the words the page showed."""
        assert ctx.session is not None
        what = "\n".join(r.text for r in replies if r.text)
        text = ctx.t.gettext("On your Yibao page: {what}").format(what=what)
        try:
            await self.notify(ctx.session.user, (Reply(text=text, erased=erased),))
        except Exception as e:  # the page's answer stands; the chat hears on its own next time
            log.warning("could not tell the chat what a page did (%s)", type(e).__name__)

    async def _open_session(self, ctx: _Ctx, user: UserKey) -> str:
        session_id, _ = await self.state.open_session(user, self.settings.session_seconds)
        return session_id

    def _signed_in(self, session_id: str, to: str, *, body: Response | None = None) -> Response:
        response: Response = body or RedirectResponse(to, status_code=303, headers=security_headers())
        self._cookie(response, SESSION_COOKIE, session_id, web.PREFIX)
        return response

    # -- entries ---------------------------------------------------------------------------------

    async def _home(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            session_id = request.cookies.get(SESSION_COOKIE, "")
            if session_id and await self.state.session(session_id, self.settings.session_seconds):
                return RedirectResponse(web.ACCOUNT, status_code=303, headers=security_headers())
            return self._render(
                ctx,
                "message.html",
                ctx.t.gettext("Yibao's page"),
                lines=[ctx.t.gettext("Send /web in the chat with Yibao for a link that opens your page.")],
            )

        return await self._guarded(request, ("GET",), page)

    async def _link(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            await self._limit(self._client(request), self.settings.link_per_minute)
            token = request.path_params.get("token", "")
            user = await self.state.take_link(token) if 20 <= len(token) <= 100 else None
            if user is None:
                return self._render(
                    ctx,
                    "message.html",
                    ctx.t.gettext("This link cannot be opened"),
                    status=403,
                    lines=[
                        ctx.t.gettext(
                            "A link from /web opens once, within 10 minutes. This one was used already or "
                            "has expired: send /web in the chat for a new one."
                        )
                    ],
                )
            return self._signed_in(await self._open_session(ctx, user), web.ACCOUNT)

        return await self._guarded(request, ("GET",), page)

    async def _telegram_entry(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            if self.telegram_token is None:
                raise PageError(404)
            nonce = secrets.token_urlsafe(16)
            return self._render(ctx, "telegram.html", ctx.t.gettext("Yibao's page"), nonce=nonce, nav=False)

        return await self._guarded(request, ("GET",), page)

    async def _telegram_session(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            if self.telegram_token is None:
                raise PageError(404)
            await self._limit(self._client(request), self.settings.link_per_minute)
            form = await self._form(request)
            user_id = telegram_user(
                form.get("init_data", ""),
                self.telegram_token,
                max_age_seconds=self.settings.max_age_seconds,
                now=self.clock(),
            )
            if user_id is None:
                raise PageError(403)
            session_id = await self._open_session(ctx, UserKey(f"tg:{user_id}"))
            body = JSONResponse({"next": web.ACCOUNT}, headers=security_headers())
            return self._signed_in(session_id, web.ACCOUNT, body=body)

        return await self._guarded(request, ("POST",), page)

    async def _wechat(self, request: Request) -> Response:
        return await self._oauth(request, "wx", web.WECHAT_ENTRY)

    async def _wecom(self, request: Request) -> Response:
        return await self._oauth(request, "wecom", web.WECOM_ENTRY)

    async def _oauth(self, request: Request, kind: str, path: str) -> Response:
        """Without ``code``: off to the platform's authorize page, with a random ``state`` also put
        in a short cookie; back with ``code`` and ``state``: the two must match (so nobody can plant
        their code in someone else's browser), and the code names the user."""

        async def page(ctx: _Ctx) -> Response:
            identity = self.identities.get(kind)
            if identity is None:
                raise PageError(404)
            code = request.query_params.get("code")
            returned = request.query_params.get("state", "")
            if not code:
                state = secrets.token_urlsafe(24)
                base = self.settings.public_url or str(request.base_url).rstrip("/")
                to = identity.authorize_url(web.url(base, path), state)
                response = RedirectResponse(to, status_code=302, headers=security_headers())
                self._cookie(response, STATE_COOKIE, state, path, max_age=600)
                return response
            await self._limit(self._client(request), self.settings.link_per_minute)
            expected = request.cookies.get(STATE_COOKIE, "")
            if (
                not expected
                or not hmac.compare_digest(expected.encode(), returned.encode())
                or len(code) > 512
            ):
                raise PageError(403)
            try:
                user = await identity.user_for(code)
            except Exception as e:
                log.warning("%s OAuth: the code could not be traded (%s)", kind, type(e).__name__)
                raise PageError(503) from None
            if user is None:
                raise PageError(403)
            signed_in = self._signed_in(await self._open_session(ctx, user), web.ACCOUNT)
            self._cookie(signed_in, STATE_COOKIE, "", path)
            return signed_in

        return await self._guarded(request, ("GET",), page)

    # -- the pages -------------------------------------------------------------------------------

    async def _bind(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            post = await self._form(request) if request.method == "POST" else None
            await self._who(ctx, post=post)
            assert ctx.state is not None
            replies: tuple[Reply, ...] = ()
            if post is not None:
                text = self._bind_text(ctx.state, post)
                if text:
                    was_bound = ctx.state.profile.binding is not None
                    replies = await self._say(ctx, text)
                    state = await self._refresh(ctx)
                    if not was_bound and state.profile.binding is not None:
                        await self._tell_chat(ctx, replies[-1:])
            return await self._bind_page(ctx, replies)

        return await self._guarded(request, ("GET", "POST"), page)

    @staticmethod
    def _bind_text(state: UserState, post: dict[str, str]) -> str:
        """What the form says, as the chat message it stands for."""
        say = post.get("say", "").strip()
        if say:
            if len(say) > 80 or not say.startswith(_BIND_SAYS):
                raise PageError(400)
            return say
        at = state.session.state
        if at is State.BIND_CODE:
            return post.get("code", "").strip()
        if at is State.BIND_CARD:
            return post.get("card", "").strip()
        name = post.get("name", "").strip()
        id_number = post.get("id_number", "").strip()
        if at is State.BIND_NAME:
            return f"{name} {id_number}".strip()
        if at is State.BIND_ID:
            return f"{name} {id_number}".strip() if name and id_number else (id_number or name)
        return ""

    async def _bind_page(self, ctx: _Ctx, replies: tuple[Reply, ...]) -> Response:
        assert ctx.state is not None
        t, state = ctx.t, ctx.state
        at = state.session.state
        step = _BIND_STATES.get(at)
        if step is None:
            step = "done" if state.profile.binding is not None else "start"
        buttons: tuple[Button, ...] = ()
        if step == "platform":
            offered = replies or await self._say(ctx, "/platform")  # restates the choices
            buttons = next((r.buttons for r in reversed(offered) if r.buttons), ())
        if step == "done" and not replies:
            assert state.profile.binding is not None
            masked = mask_id_number(state.profile.binding.id_number.get_secret_value())
            replies = (Reply(text=t.gettext("You are bound (ID {id}).").format(id=masked)),)
        titles = {
            "start": t.gettext("Bind your account"),
            "identity": t.gettext("Your name and ID number"),
            "platform": t.gettext("Your insurance platform"),
            "card": t.gettext("Your local card number"),
            "face": t.gettext("The platform's face check"),
            "code": t.gettext("The SMS code"),
            "done": t.gettext("Bound"),
        }
        return self._render(
            ctx,
            "bind.html",
            titles[step],
            replies=replies,
            step=step,
            ask="id" if at is State.BIND_ID else "name",
            buttons=buttons,
            action=web.BIND,
        )

    async def _bound(self, ctx: _Ctx, post: dict[str, str] | None = None) -> UserState:
        """The user, who must be bound and not in the middle of a bind (else: to the bind page)."""
        await self._who(ctx, post=post)
        state = ctx.state
        assert state is not None
        if state.profile.binding is None or state.session.state in _BIND_STATES:
            raise _Redirect(web.BIND)
        return state

    async def _account(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            post = await self._form(request) if request.method == "POST" else None
            await self._bound(ctx, post)
            t = ctx.t
            if post is not None:  # the next page of payments
                if post.get("say") != "/history more":
                    raise PageError(400)
                history = await self._say(ctx, "/history more")
                return self._render(ctx, "account.html", t.gettext("Your account"), **self._history(history))
            balance = await self._say(ctx, "/balance")
            fields = dict(balance[0].fields) if balance and balance[0].fields else None
            chart = await self._say(ctx, "/chart")
            picture = next((r.attachment for r in chart if r.attachment is not None), None)
            if picture is not None and not picture.content.startswith(b"<figure"):
                picture = None  # not the pages' own SVG (``SvgCharts``): never shown as markup
            history = await self._say(ctx, "/history")
            return self._render(
                ctx,
                "account.html",
                t.gettext("Your account"),
                status=200 if fields is not None else 503,
                balance=fields,
                balance_text=[] if fields is not None else _lines(balance),
                chart=Markup(picture.content.decode()) if picture is not None else None,  # noqa: S704 - our own template's output
                chart_text=_lines(chart),
                **self._history(history),
            )

        return await self._routed(request, ("GET", "POST"), page)

    @staticmethod
    def _history(replies: Sequence[Reply]) -> dict[str, Any]:
        more = next((b.payload for r in replies for b in r.buttons if b.payload == "/history more"), None)
        return {"history": _lines(replies), "more": more}

    async def _alert(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            post = await self._form(request) if request.method == "POST" else None
            state = await self._bound(ctx, post)
            replies: tuple[Reply, ...] = ()
            if post is not None:
                say = post.get("say", "").strip()
                amount = post.get("amount", "").strip()
                if say == "/alert off":
                    text = say
                elif not say and 0 < len(amount) <= 20 and "/" not in amount:
                    text = f"/alert {amount}"
                else:
                    raise PageError(400)
                replies = await self._say(ctx, text)
                after = await self._refresh(ctx)
                if after.profile.threshold != state.profile.threshold:
                    await self._tell_chat(ctx, replies)
                state = after
            threshold = state.profile.threshold
            return self._render(
                ctx,
                "alert.html",
                ctx.t.gettext("Balance alert"),
                replies=replies,
                threshold=format_money(threshold) if threshold is not None else None,
            )

        return await self._routed(request, ("GET", "POST"), page)

    async def _unbind(self, request: Request) -> Response:
        async def page(ctx: _Ctx) -> Response:
            post = await self._form(request) if request.method == "POST" else None
            state = await self._bound(ctx, post)
            t = ctx.t
            if post is None:
                assert state.profile.binding is not None
                masked = mask_id_number(state.profile.binding.id_number.get_secret_value())
                return self._render(ctx, "unbind.html", t.gettext("Unbind and erase"), masked=masked)
            if post.get("say") != "/unbind yes":
                raise PageError(400)
            await self._say(ctx, "/unbind")  # the chat's confirmation step, then its yes
            replies = await self._say(ctx, "/unbind yes")
            erased = any(r.erased for r in replies)
            if erased:
                await self._tell_chat(ctx, replies, erased=True)
                ctx.cookies.append((SESSION_COOKIE, "", web.PREFIX))
                ctx.session = None  # erased with the rest: the page has no session any more
            return self._render(
                ctx,
                "message.html",
                t.gettext("Unbound") if erased else t.gettext("Unbind and erase"),
                replies=replies,
                lines=[],
                nav=False,
            )

        return await self._routed(request, ("GET", "POST"), page)

    async def _routed(
        self, request: Request, methods: tuple[str, ...], page: Callable[[_Ctx], Awaitable[Response]]
    ) -> Response:
        async def inner(ctx: _Ctx) -> Response:
            try:
                return await page(ctx)
            except _Redirect as r:
                return RedirectResponse(r.to, status_code=303, headers=security_headers())

        return await self._guarded(request, methods, inner)

    async def _stylesheet(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return self.error(self._ctx(request), 405, {"Allow": "GET"})
        headers = security_headers()
        headers["Cache-Control"] = "public, max-age=3600"
        return Response(_css(), media_type="text/css", headers=headers)

    async def _not_found(self, request: Request) -> Response:
        if request.path_params.get("rest") == "":  # /web/
            return await self._home(request)
        return self.error(self._ctx(request), 404)


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


def _lines(replies: Sequence[Reply]) -> list[str]:
    return [line for r in replies for line in r.text.splitlines() if line.strip()]
