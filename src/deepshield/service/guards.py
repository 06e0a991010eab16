"""What stands between the network and the detector: the Host names served (against DNS
rebinding), an optional bearer token, and a budget of decoded pixels in flight (memory).

  - Host: only the names in `allowed_hosts` (loopback names by default) are answered; a web page
    the analyst visits cannot reach the local service by pointing its own domain at 127.0.0.1,
    because its requests carry that domain in Host (400).
  - Token: with one set, every request but the page itself needs `Authorization: Bearer TOKEN`
    (401); the CLI requires one when the server listens beyond loopback.
  - Decoding: each upload reserves the pixels its header declares before it is decoded; past the
    budget it waits up to `wait_s`, then gets 503 with Retry-After. Memory is bounded by the
    budget, not by the size of the thread pool.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from deepshield.service.uploads import UploadError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
RETRY_AFTER_S = 2


def host_name(header: str) -> str:
    """The name part of a Host header, lower case: 'LocalHost:8000' -> 'localhost',
    '[::1]:8000' -> '::1', 'example.org.' -> 'example.org'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


def is_loopback(host: str) -> bool:
    """True for a loopback interface name or address (localhost, 127.x.x.x, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(bind: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host names served when listening on `bind`: loopback names, the bound address itself
    when it is a specific one (not 0.0.0.0 / ::), and `extra` ('*' = any; DNS rebinding open)."""
    names = list(LOOPBACK_NAMES)
    if bind not in ("0.0.0.0", "::", ""):
        names.append(host_name(bind))
    return tuple(dict.fromkeys([*names, *(host_name(h) if h != "*" else h for h in extra)]))


def check_host(header: str | None, allowed: tuple[str, ...]) -> None:
    """UploadError 400 unless the request's Host names one of `allowed`."""
    if "*" in allowed:
        return
    name = host_name(header or "")
    if name not in allowed:
        raise UploadError(
            400,
            f"Host {header or '(none)'!r} is not served here (serving {', '.join(allowed)}): "
            f"reach the service by one of those names, or start it with --allowed-host {name}",
        )


def check_token(authorization: str | None, token: str) -> None:
    """UploadError 401 unless `Authorization: Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise UploadError(
            401,
            "this server needs a token: send the header 'Authorization: Bearer TOKEN' "
            "(curl -H 'Authorization: Bearer TOKEN' ...) with the server's --token",
        )


class DecodeBudget:
    """At most `limit` decoded pixels in flight across requests; a request waits up to `wait_s`
    for room, then is refused with 503 and Retry-After. A request costing more than the whole
    budget is let through alone (its size is capped by the per-image pixel limit)."""

    def __init__(self, limit: int, wait_s: float) -> None:
        if limit < 1:
            raise ValueError(f"decode budget {limit} must be >= 1 pixel")
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self.peak = 0
        self._room: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._room is None:  # created inside the server's event loop
            self._room = asyncio.Condition()
        return self._room

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Reserve `pixels` for the body of the `async with`."""
        cost = min(max(pixels, 0), self.limit)
        room = self._condition()
        async with room:
            try:
                await asyncio.wait_for(
                    room.wait_for(lambda: self.in_flight + cost <= self.limit), self.wait_s
                )
            except TimeoutError:
                raise UploadError(
                    503,
                    f"busy: {self.in_flight:,} of {self.limit:,} decoding pixels in use; "
                    f"retry in {RETRY_AFTER_S} s",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            self.in_flight += cost
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            async with room:
                self.in_flight -= cost
                room.notify_all()
