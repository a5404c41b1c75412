"""Outbound calls: ask Twilio's REST API to dial a number and connect it to this bridge.

Twilio fetches the bridge's own ``POST /twilio/voice`` when the callee answers, so an
outbound call gets what an inbound one gets: the admission check (a busy sentence instead of
a refused stream), the per-call stream token, From/To/CallSid in ``call_started``. Its status
callback is the bridge's ``POST /twilio/status``, so the carrier's view of the call (ringing,
answered, busy, no-answer) lands in the history. Credentials come from the environment only
(``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``): never a command line that ``ps`` shows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from xswarm.client.common import ClientError
from xswarm.protocol import twilio

TWILIO_API = "https://api.twilio.com"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
REQUEST_TIMEOUT = 15.0


@dataclass(frozen=True)
class DialedCall:
    """The call as Twilio's API created it."""

    sid: str
    status: str
    to: str
    from_: str


def credentials(environ: Mapping[str, str]) -> tuple[str, str]:
    """Account SID and auth token from the environment; ClientError names what is missing."""
    missing = [
        name for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not environ.get(name)
    ]
    if missing:
        raise ClientError(
            f"{' and '.join(missing)} not set: export your Twilio account's credentials "
            "(console > Account > API keys & tokens) before dialing"
        )
    return environ["TWILIO_ACCOUNT_SID"], environ["TWILIO_AUTH_TOKEN"]


def dial(
    to: str,
    from_: str,
    public_url: str,
    api_base: str = TWILIO_API,
    environ: Mapping[str, str] = os.environ,
) -> DialedCall:
    """Create a Twilio call from ``from_`` (a number of the account) to ``to`` whose TwiML is
    this bridge's voice webhook; returns once Twilio has accepted (not answered) it."""
    for option, number in (("--dial", to), ("--from", from_)):
        problem = twilio.e164_problem(number)
        if problem:
            raise ClientError(f"{option}: {problem}")
    account_sid, auth_token = credentials(environ)
    try:
        from twilio.base.exceptions import TwilioRestException
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client
    except ImportError:
        raise ClientError(
            "dialing needs the twilio library: pip install 'xswarm[twilio]'"
        ) from None
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=REQUEST_TIMEOUT))
    # The library's documented per-domain base URL: a Twilio region, or a test double.
    client.api.base_url = api_base.rstrip("/")
    try:
        call = client.calls.create(
            to=to,
            from_=from_,
            url=twilio.webhook_url(public_url, twilio.VOICE_PATH),
            method="POST",
            status_callback=twilio.webhook_url(public_url, twilio.STATUS_PATH),
            status_callback_method="POST",
            status_callback_event=list(STATUS_EVENTS),
        )
    except TwilioRestException as exc:
        raise ClientError(
            f"Twilio refused the call (HTTP {exc.status}, error {exc.code}): {exc.msg}"
        ) from None
    except OSError as exc:
        raise ClientError(f"cannot reach Twilio's API at {api_base}: {exc}") from None
    # The library keeps the answer's "from" private (``_from``); it is the number we sent.
    return DialedCall(str(call.sid), str(call.status), str(call.to), from_)
