"""Who may cross a process boundary, and how hard a guesser has to work (pure, no I/O).

Two secrets, so that the internet-facing bridge never holds the operators' key:
``XSWARM_SUPERVISOR_TOKEN`` admits operators to the supervisor's API (and the TUI), and
``XSWARM_CONTROL_TOKEN`` admits the supervisor to each bridge's ``/control``. Each is sent as
``Authorization: Bearer …`` (or, to the supervisor, in an ``auth`` message) and compared in
constant time. A service without its token is in development mode: it trusts only loopback
peers, and a request that came through a proxy (``Forwarded``, ``X-Forwarded-*``,
``X-Real-IP``) is never loopback, because its real client is somewhere else. With a token
configured, every request needs it, loopback included. The bridge's ``/control`` and the
supervisor's API apply the same rule through :func:`decide`; each words the outcome for its
own audience.

A correct token always succeeds. Wrong tokens earn a delay that doubles with each failure,
per source (an IPv6 source is its /64, so rotating addresses buys nothing) and across all
sources, so guessing is slow while one typo costs a quarter of a second; the delay is applied
only after the token was found wrong, so nobody can lock an operator out by failing on
purpose. Browsers are kept out by the Host and Origin rule (:func:`browser_refusal`): a DNS
rebinding page reaches us under a name we do not serve. Time is passed in, so tests need no
sleeping.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from urllib.parse import urlsplit

SUPERVISOR_TOKEN_ENV = "XSWARM_SUPERVISOR_TOKEN"
CONTROL_TOKEN_ENV = "XSWARM_CONTROL_TOKEN"
FILE_SUFFIX = "_FILE"  # XSWARM_CONTROL_TOKEN_FILE: the token read from a private file
PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Real-IP",
)
# A header on /control's refusals saying which rule refused (``source``: not in
# ``control_allow``): a WebSocket client sees the status and headers, not the body, and the
# supervisor names the fix from it.
REFUSAL_HEADER = "X-Xswarm-Refusal"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header; None when absent or another scheme."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; any text (non-ASCII, lone surrogates) is just a wrong token."""
    if given is None or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; also for a Unix socket peer ('')."""
    if address is None:
        return False
    if address == "":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_bind(host: str) -> bool:
    """True when listening on ``host`` is reachable from this machine only ("" is every address)."""
    name = host.strip("[]").lower()
    return bool(name) and (name in LOOPBACK_NAMES or is_loopback(name))


def trusted_peer(remote: str | None, headers: Mapping[str, str]) -> str | None:
    """The peer address to judge "loopback" by: None when a proxy forwarded the request."""
    if any(name in headers for name in PROXY_HEADERS):
        return None
    return remote


def throttle_key(address: str | None) -> str:
    """Whom failures are counted against: an IPv4 address, an IPv6 /64, or "unknown".

    One IPv6 host is routinely given a whole /64, so keying on the full address would hand
    every rotated address a fresh allowance.
    """
    if not address:
        return "unknown" if address is None else "local"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def host_name(host: str) -> str:
    """A Host header's name without its port, lower-cased (``[::1]:9999`` is ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


def browser_refusal(headers: Mapping[str, str], server_names: Collection[str]) -> str | None:
    """Why a request must be refused (403) as a possible cross-site or DNS-rebinding request.

    ``Host`` must be an IP literal (a rebinding attack needs a name it controls), a loopback
    name, or one of ``server_names``; an ``Origin``, which only browsers send, must name that
    same host. None when the request may go on.
    """
    host = headers.get("Host")
    if host is not None:
        name = host_name(host)
        allowed = {n.lower().rstrip(".") for n in server_names}
        if not (_is_ip_literal(name) or name in LOOPBACK_NAMES or name.rstrip(".") in allowed):
            shown = host[:64].encode("ascii", "backslashreplace").decode()
            return (
                f"Host {shown!r} is not a name this service answers to; add it to the "
                "service's server_names"
            )
    origin = headers.get("Origin")
    if origin is None:
        return None
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or host is None or netloc != host.strip().lower():
        shown = origin[:64].encode("ascii", "backslashreplace").decode()
        return f"cross-origin request from {shown!r} refused"
    return None


def source_refusal(
    remote: str | None,
    headers: Mapping[str, str],
    allowed: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str | None:
    """Why ``remote`` may not open ``/control`` under ``[voice.bridge] control_allow``; None
    when it may. Loopback always may; no networks means any source may (the token is checked
    either way). A request a proxy forwarded is refused: its real source is not ``remote``,
    and the supervisor connects to bridges directly.
    """
    if not allowed:
        return None
    peer = trusted_peer(remote, headers)
    if is_loopback(peer):
        return None
    if peer is None:
        return (
            f"a request forwarded by a proxy at {remote} (it carries proxy headers) is not a "
            "direct source in [voice.bridge] control_allow; connect the supervisor to the "
            "bridge's own address"
        )
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip is not None and any(ip in network for network in allowed):
        return None
    networks = ", ".join(map(str, allowed))
    return (
        f"source {peer} is not in [voice.bridge] control_allow ({networks}); add the "
        "supervisor's network there, or connect from an allowed one"
    )


class Decision(enum.Enum):
    """The outcome of one authentication attempt, before any service words it."""

    TOKEN_OK = "token_ok"
    LOOPBACK_OPEN = "loopback_open"  # no token configured; a loopback peer is let in
    NOT_LOOPBACK = "not_loopback"  # no token configured; anyone else is refused
    MISSING = "missing"  # a token is configured and none was offered
    WRONG = "wrong"

    @property
    def ok(self) -> bool:
        return self in (Decision.TOKEN_OK, Decision.LOOPBACK_OPEN)


def decide(expected: str | None, given: str | None, peer: str | None) -> Decision:
    """The one rule: with a configured token, only that token; without, only loopback peers.

    ``peer`` is :func:`trusted_peer`'s answer, so a proxied request is never loopback.
    """
    if not expected:
        return Decision.LOOPBACK_OPEN if is_loopback(peer) else Decision.NOT_LOOPBACK
    if given is None:
        return Decision.MISSING
    return Decision.TOKEN_OK if tokens_match(given, expected) else Decision.WRONG


class BadTokenThrottle:
    """Per-address slow-down for failed authentications.

    The n-th consecutive failure from an address waits ``base * 2**(n-1)`` seconds (at most
    ``cap``) before its answer, and answers to one address are serialised: failures on parallel
    connections queue behind each other, so opening more sockets does not buy more guesses.
    Once the queue reaches ``max_wait`` seconds the address is locked out: its tokens are not
    even checked until the queue drains. An address is forgiven after ``forget_after`` quiet
    seconds or one success. At most ``max_addresses`` are tracked (oldest dropped), so a spray
    of source addresses cannot grow memory without bound.
    """

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 5.0,
        max_wait: float = 30.0,
        forget_after: float = 600.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.base = base
        self.cap = cap
        self.max_wait = max_wait
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        # address -> (consecutive failures, time of the last, when its last answer is due)
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def failures(self, address: str, now: float) -> int:
        entry = self._failures.get(address)
        if entry is None:
            return 0
        count, last, due = entry
        if now - max(last, due) > self.forget_after:
            del self._failures[address]
            return 0
        return count

    def locked_out(self, address: str, now: float) -> float:
        """Seconds until this address may try again; 0 when its token may be checked now."""
        entry = self._failures.get(address)
        if entry is None or self.failures(address, now) == 0:
            return 0.0
        backlog = entry[2] - now
        return backlog if backlog >= self.max_wait else 0.0

    def record_failure(self, address: str, now: float) -> float:
        """Count a failure; returns the delay to wait before answering it."""
        count = self.failures(address, now) + 1
        previous_due = self._failures[address][2] if address in self._failures else now
        step: float = min(self.cap, self.base * 2.0 ** (count - 1))
        due = max(now, previous_due) + step
        self._failures[address] = (count, now, due)
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return due - now

    def record_success(self, address: str) -> None:
        self._failures.pop(address, None)


class AuthThrottle:
    """Failed authentications slowed per source and across all sources.

    Used only after a token was found wrong: a correct token is never delayed or refused, so
    a local user failing on purpose cannot lock the operator out. The per-source queue makes
    one source's guesses slow; the shared one bounds the rate of a guesser spread over many
    addresses. A failure waits for whichever queue is longer; while either is ``max_wait``
    long, failures are answered at once with "try again later" (HTTP 429), so waiting
    answers cannot pile up.
    """

    GLOBAL = "*"

    def __init__(
        self,
        per_source: BadTokenThrottle | None = None,
        everyone: BadTokenThrottle | None = None,
    ) -> None:
        self.per_source = per_source or BadTokenThrottle()
        self.everyone = everyone or BadTokenThrottle(base=0.05, cap=1.0, max_addresses=1)

    def locked_out(self, address: str | None, now: float) -> float:
        """Seconds until failures from ``address`` are answered again; 0 when they are now."""
        return max(
            self.per_source.locked_out(throttle_key(address), now),
            self.everyone.locked_out(self.GLOBAL, now),
        )

    def record_failure(self, address: str | None, now: float) -> float:
        """Count a wrong token; returns the seconds to wait before answering it."""
        return max(
            self.per_source.record_failure(throttle_key(address), now),
            self.everyone.record_failure(self.GLOBAL, now),
        )

    def record_success(self, address: str | None) -> None:
        self.per_source.record_success(throttle_key(address))


class TokenBucket:
    """``rate`` units a second sustained, at most ``capacity`` at once; starts full."""

    __slots__ = ("_last", "capacity", "level", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self._last: float | None = None

    def spend(self, amount: float, now: float) -> bool:
        """Take ``amount``; False (and nothing taken) when the bucket holds less."""
        if self._last is not None:
            self.level = min(self.capacity, self.level + (now - self._last) * self.rate)
        self._last = now
        if amount > self.level:
            return False
        self.level -= amount
        return True


class FloodGuard(TokenBucket):
    """A token bucket per connection: ``rate`` messages a second sustained, ``burst`` at once."""

    def __init__(self, rate: float = 200.0, burst: float = 400.0) -> None:
        super().__init__(rate, burst)

    def allow(self, now: float) -> bool:
        return self.spend(1.0, now)
