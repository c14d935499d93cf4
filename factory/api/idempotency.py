"""``Idempotency-Key`` on every POST, applied in one place: this ASGI middleware.

The body is spooled (memory up to 1 MiB, then a temporary file) while its
fingerprint is computed, so the decision is made before the route runs, then the
route reads the spooled body as if it came from the client. Rules in
``factory.idempotency.service``. Replayed responses carry ``Idempotent-Replayed: true``.

Keys are per tenant: the tenant is the caller's, which AuthenticationMiddleware (in
front of this one) put in ``scope["state"]["principal"]``. A request that reached here
without one (a public path) is not subject to idempotency.
"""

from __future__ import annotations

import json
import tempfile
from typing import IO, Any

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factory.api.errors import error_body
from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant
from factory.idempotency import service

MAX_STORED_RESPONSE = 4 * 1024 * 1024
_READ = 1 << 16


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def body_limit(self) -> int:
        return max(self.settings.max_body_bytes, self.settings.batch_max_file_bytes + (1 << 20))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        principal = scope.get("state", {}).get("principal")
        if key is None or principal is None:
            await self.app(scope, receive, send)
            return
        if not service.valid_key(key):
            await _send_json(send, 422, error_body("invalid_input", "Idempotency-Key must be 1 to 255 printable "
                                                   "characters without spaces", "Idempotency-Key"))
            return
        with tempfile.SpooledTemporaryFile(1 << 20) as spool:
            fingerprint = service.RequestFingerprint("POST", scope["path"], scope.get("query_string", b"").decode(),
                                                     headers.get("content-type"))
            if not await self._spool_body(receive, send, spool, fingerprint):
                return
            request_hash = fingerprint.hexdigest()
            decision = await run_in_threadpool(self._begin, principal.tenant_id, key, request_hash)
            if decision.action != service.PROCEED:
                await self._answer_without_running(send, decision)
                return
            spool.seek(0)
            await self._run(scope, receive, send, spool, principal.tenant_id, key)

    async def _spool_body(self, receive: Receive, send: Send, spool: IO[bytes],
                          fingerprint: service.RequestFingerprint) -> bool:
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit():
                await _send_json(send, 413, error_body("body_too_large", "request body is too large", "body"))
                return False
            spool.write(chunk)
            fingerprint.update(chunk)
            if not message.get("more_body", False):
                return True

    def _begin(self, tenant_id: str, key: str, request_hash: str) -> service.Decision:
        for _ in range(2):
            with bind_tenant(get_sessionmaker(self.settings.database_url)(), tenant_id) as session:
                try:
                    decision = service.begin(session, tenant_id, key, request_hash, self.settings.idempotency_ttl_s)
                    session.commit()
                    return decision
                except IntegrityError:  # a concurrent first use claimed it: look again
                    session.rollback()
        return service.Decision(service.IN_PROGRESS)

    def _finish(self, tenant_id: str, key: str, status: int | None, content_type: str | None,
                body: bytes | None) -> None:
        with bind_tenant(get_sessionmaker(self.settings.database_url)(), tenant_id) as session:
            service.finish(session, tenant_id, key, status, content_type, body)
            session.commit()

    async def _answer_without_running(self, send: Send, decision: service.Decision) -> None:
        if decision.action == service.MISMATCH:
            await _send_json(send, 409, error_body(
                "idempotency_key_reused", "this Idempotency-Key was used with a different request",
                "Idempotency-Key"))
            return
        if decision.action == service.IN_PROGRESS or decision.stored is None:
            await _send_json(send, 409, error_body(
                "idempotency_key_in_use", "a request with this Idempotency-Key is still running; retry shortly",
                "Idempotency-Key"))
            return
        stored = decision.stored
        body = stored.response_body or b""
        await send({"type": "http.response.start", "status": stored.status_code or 200,
                    "headers": [(b"content-type", (stored.content_type or "application/json").encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"idempotent-replayed", b"true")]})
        await send({"type": "http.response.body", "body": body})

    async def _run(self, scope: Scope, receive: Receive, send: Send, spool: IO[bytes], tenant_id: str,
                   key: str) -> None:
        body_done = False

        async def replay_body() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()  # after the body: wait for the client to disconnect, as usual
            chunk = spool.read(_READ)
            more = len(chunk) == _READ
            body_done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}

        status: int | None = None
        content_type: str | None = None
        captured: list[bytes] | None = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal status, content_type, captured, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = Headers(raw=message.get("headers", [])).get("content-type")
            elif message["type"] == "http.response.body" and captured is not None:
                size += len(message.get("body", b""))
                if size <= MAX_STORED_RESPONSE:
                    captured.append(message.get("body", b""))
                else:
                    captured = None
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            await run_in_threadpool(self._finish, tenant_id, key, None, None, None)
            raise
        body = b"".join(captured) if captured is not None else None
        await run_in_threadpool(self._finish, tenant_id, key, status, content_type, body)
