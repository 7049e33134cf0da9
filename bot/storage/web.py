"""The pages' shared state in Redis (``platforms.web.state.WebState``).

- ``web:l:<sha256 of the token>``: the user key, encrypted with the operator's key and bound to
  that hash; ``SET … EX``, taken with ``GETDEL`` (Redis 6.2+), so a token opens once however many
  instances are asked.
- ``web:s:<sha256 of the session id>``: a hash of ``u`` (the user key, encrypted, bound to that hash)
  and ``c`` (the CSRF token), expiring after the idle time; a request restarts it.
- ``{user}:web`` (``UserKind.WEB``): the set of the user's session hashes, expiring with them. A
  session counts only while it is listed there, so ``/unbind`` and every erasure (which delete all of
  the user's keys) end the user's sessions at once, on every instance, though the session records
  themselves (in other hash slots) run out on their own — holding nothing readable: the user key
  in them is sealed.

Tokens and ids are 32 random bytes; only their hashes are keys, so a copy of Redis opens nothing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.crypto.pii import PiiCipher, PiiError
from bot.storage.keys import Keys, UserKind
from dialogs.models import UserKey
from dialogs.ports import StoreUnavailable
from platforms.web.state import PageSession

log = logging.getLogger(__name__)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RedisWebState:
    def __init__(self, redis: Redis, keys: Keys, cipher: PiiCipher) -> None:
        self.redis = redis
        self.keys = keys
        self.cipher = cipher

    async def issue_link(self, user: UserKey, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        sealed = self.cipher.encrypt(user, context=f"web-link:{digest}")
        try:
            await self.redis.set(self.keys.web_link(digest), sealed, ex=ttl_seconds)
        except (RedisError, OSError) as e:
            raise StoreUnavailable(user) from e
        return token

    async def take_link(self, token: str) -> UserKey | None:
        digest = _digest(token)
        try:
            sealed = await self.redis.getdel(self.keys.web_link(digest))
        except (RedisError, OSError) as e:
            raise StoreUnavailable("web link") from e
        if sealed is None:
            return None
        try:
            return UserKey(self.cipher.decrypt(_text(sealed), context=f"web-link:{digest}"))
        except PiiError:
            log.warning("a web link token did not decrypt (another key?): refused")
            return None

    async def open_session(self, user: UserKey, ttl_seconds: int) -> tuple[str, PageSession]:
        session_id = secrets.token_urlsafe(32)
        digest = _digest(session_id)
        csrf = secrets.token_urlsafe(32)
        sealed = self.cipher.encrypt(user, context=f"web-session:{digest}")
        index = self.keys.user(user, UserKind.WEB)
        key = self.keys.web_session(digest)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, mapping={"u": sealed, "c": csrf})
            pipe.expire(key, ttl_seconds)
            pipe.sadd(index, digest)
            pipe.expire(index, ttl_seconds)
            await pipe.execute()
        except (RedisError, OSError) as e:
            raise StoreUnavailable(user) from e
        return session_id, PageSession(user=user, csrf=csrf)

    async def session(self, session_id: str, ttl_seconds: int) -> PageSession | None:
        digest = _digest(session_id)
        key = self.keys.web_session(digest)
        try:
            record = await self.redis.hgetall(key)
            if not record or b"u" not in record or b"c" not in record:
                return None
            try:
                user = UserKey(self.cipher.decrypt(_text(record[b"u"]), context=f"web-session:{digest}"))
            except PiiError:
                return None
            index = self.keys.user(user, UserKind.WEB)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sismember(index, digest)
            pipe.expire(key, ttl_seconds)
            pipe.expire(index, ttl_seconds)  # no-op once erased: the index is not made again
            listed, _, _ = await pipe.execute()
            if not listed:
                await self.redis.delete(key)  # the user was erased (or unbound) since
                return None
        except (RedisError, OSError) as e:
            raise StoreUnavailable("web session") from e
        return PageSession(user=user, csrf=_text(record[b"c"]))

    async def close_session(self, session_id: str) -> None:
        try:
            await self.redis.delete(self.keys.web_session(_digest(session_id)))
        except (RedisError, OSError) as e:
            raise StoreUnavailable("web session") from e

    async def allow(self, bucket: str, limit: int, window_seconds: int) -> bool:
        key = self.keys.web_rate(_digest(bucket)[:32])
        try:
            count = int(await self.redis.incr(key))
            if count == 1:
                await self.redis.expire(key, window_seconds)
        except (RedisError, OSError) as e:
            raise StoreUnavailable("web rate") from e
        return count <= limit


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
