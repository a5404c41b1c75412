"""The supervisor's core: upstream events in, history out, operator fan-out and commands.

Order matters for the promise the history makes: a finished call is committed to SQLite
*before* its ``call_ended`` reaches any operator, so whatever an operator has seen survives a
``kill -9``. Everything runs on the one event loop; nothing here blocks for long. A fleet
starts and ends calls many times a second and each commit waits for the disk, so starts and
ends are written in groups (one transaction per ``COMMIT_GROUP_S``), and every event for
operators waits, in order, until the group it follows is committed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from xswarm.protocol import control
from xswarm.protocol.control import suggestion_problem
from xswarm.protocol.operator import Batch, Hangup, InjectSuggestion, Watch
from xswarm.supervisor.batching import Coalescer, call_key
from xswarm.supervisor.fleet import CallRecord, Fleet, LiveCall, Outcome, instance_names, iso
from xswarm.supervisor.store import Store
from xswarm.supervisor.upstream import Upstream

log = logging.getLogger("xswarm.supervisor")

OPERATOR_QUEUE = 2000
PENDING_SUGGESTIONS = 10_000
PENDING_TTL = 600.0
CLOSE_TIMEOUT = 3.0
DEFAULT_BATCH_INTERVAL = 1.0
# Events per ``batch`` message: a flush of a large fleet goes out as several moderate
# messages, so that a dashboard decoding one still answers keys between them.
MAX_BATCH_EVENTS = 500
# Calls that no batching operator watches (off every screen) get their merged updates every
# this many batch intervals; the watched ones every interval.
BACKGROUND_FLUSHES = 5
# Call starts and ends are committed together at most this long after the first of a group:
# at 5000 live calls, ~8 commits a second instead of ~80, and events wait at most this long.
COMMIT_GROUP_S = 0.1


@dataclass(eq=False)
class Operator:
    """One authenticated operator connection and its bounded outbound queue."""

    ws: web.WebSocketResponse
    peer: str
    subscribed: bool = False
    # Asked for batches: per-call updates reach it coalesced, once per batch interval.
    batched: bool = False
    # The call ids it watches (``watch``); None: every call, at the full batch rate.
    watching: frozenset[str] | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(OPERATOR_QUEUE))
    dropped: int = 0
    closing: bool = False

    def offer(self, text: str) -> bool:
        """Queue a message; False when this operator has fallen too far behind."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True


@dataclass
class Counters:
    events_in: int = 0
    events_out: int = 0
    operators_dropped_slow: int = 0
    auth_failures: int = 0
    operator_errors: int = 0
    operators_flooding: int = 0
    suggestions_forwarded: int = 0
    suggestions_rejected_locally: int = 0
    hangups_forwarded: int = 0
    calls_recorded: int = 0
    store_errors: int = 0


class OperatorHub:
    """Live fleet, history store, upstream subscriptions and operator connections."""

    def __init__(
        self,
        store: Store,
        stale_after: float,
        token: str | None,
        on_change: Callable[[], None] = lambda: None,
        control_token: str | None = None,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
    ) -> None:
        self.store = store
        self.fleet = Fleet(stale_after)
        # Operators present ``token``; bridges are shown ``control_token``, never the other,
        # or an instance's own token when it has one (tokens.read_instance_tokens).
        self.token = token
        self.control_token = control_token
        self.instance_tokens: dict[str, str | None] = {}
        # How wss:// bridges are checked ([dashboard] ca_file); None: the system's CAs.
        self.client_tls: ssl.SSLContext | None = None
        self.upstreams: dict[str, Upstream] = {}
        self.operators: set[Operator] = set()
        self.counters = Counters()
        self._on_change = on_change
        self._session: aiohttp.ClientSession | None = None
        self._request_ids = itertools.count(1)
        # our request_id sent upstream -> (requester, the requester's own request_id, when)
        self._pending: OrderedDict[str, tuple[Operator, str | int | None, float]] = OrderedDict()
        self._ticker: asyncio.Task[None] | None = None
        # Calls started or ended since the last tick: the status line is due then.
        self._calls_changed = False
        self.batch_interval = batch_interval
        self.held = Coalescer()
        self._flushes = 0
        self._flusher: asyncio.Task[None] | None = None
        # Starts and ends not yet committed, and the operator events that wait for them.
        self._unwritten: list[LiveCall | CallRecord] = []
        self._after_commit: list[dict[str, Any]] = []
        self._commit_timer: asyncio.TimerHandle | None = None
        self.started_at = time.time()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, urls: list[str]) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=2.0, sock_connect=2.0)
        )
        for name, url in instance_names(urls).items():
            self._apply(self.fleet.add_instance(name, url))
        self._apply(self.fleet.adopt_open_calls(self.store.open_calls()))
        for name, url in instance_names(urls).items():
            self._start_upstream(name, url)
        self._ticker = asyncio.create_task(self._tick(), name="staleness ticker")
        self._flusher = asyncio.create_task(self._flush_batches(), name="batch flusher")

    async def set_instances(self, urls: list[str]) -> tuple[list[str], list[str]]:
        """Apply a new instance list live; returns (added names, removed names)."""
        wanted = instance_names(urls)
        current = {name: up.url for name, up in self.upstreams.items()}
        removed = [n for n, u in current.items() if wanted.get(n) != u]
        added = [n for n, u in wanted.items() if current.get(n) != u]
        for name in removed:
            upstream = self.upstreams.pop(name)
            await upstream.stop()
            self._apply(self.fleet.remove_instance(name))
        for name in added:
            self._apply(self.fleet.add_instance(name, wanted[name]))
            self._start_upstream(name, wanted[name])
        self._on_change()
        return added, removed

    def set_stale_after(self, seconds: float) -> None:
        self.fleet.stale_after = seconds

    async def close(self) -> None:
        """Commit what is held, stop ticking, close operator sockets with 1001, close
        upstreams; idempotent."""
        self.commit()
        for task in (self._ticker, self._flusher):
            if task is not None:
                task.cancel()
        self._ticker = self._flusher = None
        for op in self.operators:
            op.closing = True
        # In parallel and bounded: one unresponsive peer must not hold up the stop.
        closing: list[Awaitable[Any]] = [
            op.ws.close(code=1001, message=b"supervisor stopping") for op in self.operators
        ]
        closing += [upstream.stop() for upstream in self.upstreams.values()]
        if closing:
            done = asyncio.gather(*closing, return_exceptions=True)
            try:
                await asyncio.wait_for(done, CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("some connections did not close within %g s", CLOSE_TIMEOUT)
        self.upstreams.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _start_upstream(self, name: str, url: str) -> None:
        assert self._session is not None
        upstream = Upstream(
            name,
            url,
            self._session,
            lambda: self.instance_tokens.get(name, self.control_token),
            on_connected=lambda n: self._apply(self.fleet.connected(n)),
            on_message=self._upstream_message,
            on_disconnected=self._upstream_lost,
            silence_limit=lambda: max(4 * self.fleet.stale_after, 5.0),
            tls=lambda: self.client_tls,
        )
        self.upstreams[name] = upstream
        upstream.start()

    def _upstream_lost(self, name: str, reason: str) -> None:
        upstream = self.upstreams.get(name)
        failure = upstream.failure if upstream is not None else None
        if failure is None:
            self._apply(self.fleet.disconnected(name, reason))
        else:
            self._apply(self.fleet.disconnected(name, reason, failure.state, failure.code))

    async def _tick(self) -> None:
        """Staleness checks four times per ``stale_after``, so "stale" is never late by much."""
        while True:
            await asyncio.sleep(max(0.05, min(0.25, self.fleet.stale_after / 4)))
            try:
                self._apply(self.fleet.check_stale())
                self._expire_pending()
                if self._calls_changed:
                    self._calls_changed = False
                    self._on_change()
            except Exception:
                log.exception("staleness check failed; continuing")

    # -- upstream -> fleet -> store -> operators ---------------------------------------------

    def _upstream_message(self, name: str, message: dict[str, Any]) -> None:
        self.counters.events_in += 1
        kind = message.get("type")
        requester: Operator | None = None
        if kind in ("suggestion_applied", "suggestion_rejected"):
            message, requester = self._route_answer(message)
        elif kind == "error":
            problem = str(message.get("message"))[:200]
            log.warning("instance %s refused a command: %s", name, problem)
        elif kind == "carrier_status":
            self.store.carrier_status(name, message)
        outcome = self.fleet.apply(name, message)
        if requester is not None:
            for event in outcome.events:
                if event.get("type") == kind:
                    event["_requester"] = requester
        self._apply(outcome)

    def _apply(self, outcome: Outcome) -> None:
        """Persist first, then tell operators: the order behind "nothing seen is lost"."""
        if outcome.started or outcome.ended:
            self._unwritten += outcome.started
            self._unwritten += outcome.ended
            self._schedule_commit()
        if self._unwritten:
            self._after_commit += outcome.events
        else:
            for event in outcome.events:
                self.broadcast(event)
        if any(e.get("type") in ("instance_state", "instance_removed") for e in outcome.events):
            self._on_change()
        elif outcome.started or outcome.ended:
            # Counting the live calls costs a pass over the fleet: at most once per tick.
            self._calls_changed = True

    def _schedule_commit(self) -> None:
        if self._commit_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        self._commit_timer = loop.call_later(COMMIT_GROUP_S, self.commit)

    def commit(self) -> None:
        """Write the held starts and ends in one transaction, then send the events that waited.

        A record that cannot be written is logged and counted; its events still go out (the
        operators' view of the fleet must not stall on a disk error).
        """
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        changes, self._unwritten = self._unwritten, []
        events, self._after_commit = self._after_commit, []
        try:
            failed = self.store.record_calls(changes)
        except Exception as error:
            log.exception("could not record %d call starts and ends", len(changes))
            failed = [(change, error) for change in changes]
        for change, why in failed:
            what = "start" if isinstance(change, LiveCall) else "end"
            log.error("could not record the %s of call %s: %s", what, change.call_id, why)
        self.counters.store_errors += len(failed)
        ended = sum(isinstance(change, CallRecord) for change in changes)
        self.counters.calls_recorded += ended - sum(
            isinstance(change, CallRecord) for change, _ in failed
        )
        for event in events:
            try:
                self.broadcast(event)
            except Exception:
                log.exception("sending a %s event to operators failed", event.get("type"))

    def broadcast(self, event: dict[str, Any]) -> None:
        """Send one event to every subscriber (and the operator it answers), each encoded once.

        Subscribers that asked for batches get per-call updates held for the next flush; an
        event that cannot wait goes to them at once, after what is held for its call.
        """
        requester = event.pop("_requester", None)
        if not self.operators:
            return
        alone: str | None = None
        for_batching: str | None = None
        decided = False
        for op in list(self.operators):
            if op.subscribed and op.batched:
                if not decided:
                    for_batching, decided = self._for_batching(event), True
                if for_batching is not None:
                    self._offer(op, for_batching)
            elif op.subscribed or op is requester:
                if alone is None:
                    alone = json.dumps(event)
                self._offer(op, alone)

    def _for_batching(self, event: dict[str, Any]) -> str | None:
        """The text batching subscribers get for ``event`` now; None when it is held."""
        if self.held.hold(event):
            return None
        key = call_key(event)
        due = self.held.take_call(key) if key is not None else []
        if not due:
            return json.dumps(event)
        batch = Batch(iso(time.time()), (*due, event), self.background_s)
        return json.dumps(batch.encode())

    @property
    def background_s(self) -> float:
        return self.batch_interval * BACKGROUND_FLUSHES

    def watch(self, op: Operator, command: Watch) -> None:
        op.watching = None if command.call_ids is None else frozenset(command.call_ids)

    def flush_batches(self) -> None:
        """Send what is held to the subscribers that asked for batches.

        Updates of calls that some batching subscriber watches go every time; each of the
        others every ``BACKGROUND_FLUSHES`` times (merged meanwhile), a share of them at each
        flush, unless a subscriber watches everything. A fleet's dashboard shows a few dozen
        rows of thousands of calls.
        """
        if not len(self.held):
            return
        self._flushes += 1
        receivers = [op for op in self.operators if op.subscribed and op.batched]
        every = any(op.watching is None for op in receivers)
        watched = frozenset().union(*(op.watching or () for op in receivers))
        if not receivers or every:
            events = self.held.take_all()
        else:
            share = self._flushes % BACKGROUND_FLUSHES
            events = self.held.take_share(watched, share, BACKGROUND_FLUSHES)
        if not receivers or not events:
            return
        ts = iso(time.time())
        for start in range(0, len(events), MAX_BATCH_EVENTS):
            part = tuple(events[start : start + MAX_BATCH_EVENTS])
            text = json.dumps(Batch(ts, part, self.background_s).encode())
            for op in receivers:
                self._offer(op, text)

    async def _flush_batches(self) -> None:
        while True:
            await asyncio.sleep(self.batch_interval)
            try:
                self.flush_batches()
            except Exception:
                log.exception("flushing batched events failed; continuing")

    def send_to(self, op: Operator, message: dict[str, Any]) -> None:
        self._offer(op, json.dumps(message))

    def _offer(self, op: Operator, text: str) -> None:
        if op.closing:
            return
        if op.offer(text):
            self.counters.events_out += 1
            return
        op.closing = True
        self.counters.operators_dropped_slow += 1
        log.warning("operator %s fell %d messages behind; closing it", op.peer, OPERATOR_QUEUE)
        asyncio.get_running_loop().create_task(
            op.ws.close(code=1008, message=b"too slow: fell behind the event stream")
        )

    # -- suggestions and hang-ups ------------------------------------------------------------

    def _route_answer(self, message: dict[str, Any]) -> tuple[dict[str, Any], Operator | None]:
        """Give a bridge's answer back the requester's own request_id, and say who asked."""
        ours = message.get("request_id")
        if not isinstance(ours, str) or ours not in self._pending:
            return message, None
        requester, theirs, _ = self._pending.pop(ours)
        routed = {**message}
        if theirs is None:
            routed.pop("request_id", None)
        else:
            routed["request_id"] = theirs
        return routed, requester

    def _expire_pending(self) -> None:
        now = time.monotonic()
        while self._pending:
            key, (_, _, when) = next(iter(self._pending.items()))
            if now - when < PENDING_TTL and len(self._pending) <= PENDING_SUGGESTIONS:
                break
            self._pending.popitem(last=False)

    def _reject(self, op: Operator, cmd: InjectSuggestion, call_id: str | None, why: str) -> None:
        self.counters.suggestions_rejected_locally += 1
        body = control.SuggestionRejected(call_id, why, cmd.request_id).encode()
        self.send_to(op, {"type": body.pop("type"), "ts": iso(time.time()), **body})

    async def inject_suggestion(self, op: Operator, cmd: InjectSuggestion) -> None:
        if (problem := suggestion_problem(cmd.text, cmd.priority)) is not None:
            return self._reject(op, cmd, cmd.call_id, problem)
        if cmd.call_id is None:
            live = [c for c in self.fleet.calls.values() if c.state == "active"]
            if len(live) != 1:
                why = "no live call"
                if live:
                    why = f"{len(live)} live calls; name one with call_id"
                return self._reject(op, cmd, None, why)
            call = live[0]
        else:
            found = self.fleet.find_calls(cmd.call_id, cmd.instance)
            if not found:
                return self._reject(op, cmd, cmd.call_id, f"no live call {cmd.call_id}")
            if len(found) > 1:
                names = ", ".join(c.instance for c in found)
                return self._reject(
                    op, cmd, cmd.call_id, f'call {cmd.call_id} is live on {names}; add "instance"'
                )
            call = found[0]
        upstream = self.upstreams.get(call.instance)
        if call.state != "active" or upstream is None or not upstream.connected:
            return self._reject(op, cmd, call.call_id, f"instance {call.instance} is down")
        ours = f"sv-{next(self._request_ids)}"
        self._pending[ours] = (op, cmd.request_id, time.monotonic())
        sent = await upstream.send(
            control.InjectSuggestion(cmd.text, call.call_id, cmd.priority, ours)
        )
        if not sent:
            self._pending.pop(ours, None)
            return self._reject(op, cmd, call.call_id, f"instance {call.instance} is down")
        self.counters.suggestions_forwarded += 1
        log.info(
            "operator %s sent a suggestion to call %s",
            op.peer,
            call.call_id,
            extra={"call_id": call.call_id},
        )

    async def hangup(self, op: Operator, cmd: Hangup) -> str | None:
        """Forward a hang-up; returns an error message for the operator, or None."""
        found = self.fleet.find_calls(cmd.call_id, cmd.instance)
        if not found:
            return f"no live call {cmd.call_id}"
        if len(found) > 1:
            names = ", ".join(c.instance for c in found)
            return f'call {cmd.call_id} is live on {names}; add "instance"'
        call = found[0]
        upstream = self.upstreams.get(call.instance)
        if upstream is None or not await upstream.send(control.Hangup(call.call_id)):
            return f"instance {call.instance} is down; cannot hang up {call.call_id}"
        self.counters.hangups_forwarded += 1
        log.info(
            "operator %s hung up call %s", op.peer, call.call_id, extra={"call_id": call.call_id}
        )
        return None

    # -- summaries ---------------------------------------------------------------------------

    def status_line(self) -> str:
        return (
            f"Supervising {len(self.fleet.instances)} instances, "
            f"{self.fleet.active_call_count()} active calls"
        )
