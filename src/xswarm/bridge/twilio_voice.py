"""``POST /twilio/voice`` and ``POST /twilio/status``: Twilio's call webhooks.

The voice webhook answers a ringing call with TwiML that connects it to this bridge's
``/twilio`` stream, carrying the call's From/To/CallSid (and, with ``twilio_stream_token``,
a fresh stream token) as stream parameters; when the bridge could not take the stream (full,
draining, starting) it answers with ``busy_message`` and a hang-up instead, so the caller
hears a sentence rather than a dropped line. The status callback records the carrier's view
of each call. Both publish ``carrier_status`` on /control, which the supervisor keeps.

The form, its signature and the TwiML are the sans-I/O ``xswarm.protocol.twilio``; this
module only reads the request and answers it.
"""

from __future__ import annotations

import logging
import os
import time

from aiohttp import web

from xswarm.bridge.registry import CallRegistry
from xswarm.bridge.session import refuse
from xswarm.protocol import control, twilio

log = logging.getLogger("xswarm.twilio")

TWIML = "text/xml"
# What a webhook's busy answer counts as in xswarm_calls_rejected_total, by bridge state.
BUSY_REASONS = {"full": "full", "draining": "draining"}


class TwilioWebhooks:
    """The two webhook handlers of one bridge, reading its registry as it is now."""

    def __init__(self, calls: CallRegistry) -> None:
        self.calls = calls

    async def voice(self, request: web.Request) -> web.Response:
        webhook = await self._read(request, status_required=False)
        if isinstance(webhook, web.Response):
            return webhook
        bridge = self.calls.config.bridge
        state = self.calls.public_state()
        if state != "ready":
            self.calls.count_rejection(BUSY_REASONS.get(state, "starting"))
            self._publish(webhook, answer="busy")
            log.info("call %s answered busy: the bridge is %s", webhook.call_sid, state)
            return web.Response(
                text=twilio.say_hangup_twiml(bridge.busy_message), content_type=TWIML
            )
        parameters = [
            ("From", webhook.caller),
            ("To", webhook.callee),
            ("CallSid", webhook.call_sid),
        ]
        secret = os.environ.get("TWILIO_AUTH_TOKEN")
        if bridge.twilio_stream_token and secret:
            expires = int(time.time()) + twilio.STREAM_TOKEN_TTL
            token = twilio.stream_token(secret, webhook.call_sid, expires)
            parameters.append((twilio.STREAM_TOKEN_PARAMETER, token))
        if bridge.public_url:
            stream = twilio.stream_url(bridge.public_url)
        else:
            # Twilio only opens wss:// streams; without public_url the Host it called is all
            # we know (only the caller's own TwiML depends on it, so it may choose it).
            stream = f"wss://{request.host}{twilio.STREAM_PATH}"
        self._publish(webhook, answer="stream")
        log.info(
            "call %s from %r to %r: streaming", webhook.call_sid, webhook.caller, webhook.callee
        )
        return web.Response(text=twilio.connect_twiml(stream, parameters), content_type=TWIML)

    async def status(self, request: web.Request) -> web.Response:
        webhook = await self._read(request, status_required=True)
        if isinstance(webhook, web.Response):
            return webhook
        self._publish(webhook)
        log.info("call %s: carrier reports %s", webhook.call_sid, webhook.status)
        return web.Response(status=204)

    async def _read(
        self, request: web.Request, status_required: bool
    ) -> twilio.CallWebhook | web.Response:
        """The webhook's call fields, or the refusal to answer with (400, 403, 413, 415)."""
        if (request.content_length or 0) > twilio.MAX_FORM_BYTES:
            return refuse(413, f"body exceeds {twilio.MAX_FORM_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, f"body exceeds {twilio.MAX_FORM_BYTES} bytes")
        try:
            pairs = twilio.parse_form(body, request.headers.get("Content-Type", ""))
        except twilio.FormError as exc:
            return refuse(exc.status, str(exc))
        secret = os.environ.get("TWILIO_AUTH_TOKEN")
        if secret and not self._signed(request, secret, pairs):
            self.calls.count_rejection("auth")
            return refuse(403, "X-Twilio-Signature is missing or does not match this URL and form")
        try:
            return twilio.parse_call_webhook(pairs, status_required)
        except twilio.FormError as exc:
            return refuse(exc.status, str(exc))

    def _signed(self, request: web.Request, secret: str, pairs: list[tuple[str, str]]) -> bool:
        """Twilio signed ``public_url``'s root plus our path and query (never a client's
        X-Forwarded-* headers); public_url is required once TWILIO_AUTH_TOKEN is set."""
        signature = request.headers.get("X-Twilio-Signature", "")
        public_url = self.calls.config.bridge.public_url
        if not signature or not public_url:
            return False
        url = twilio.webhook_url(public_url, request.path)
        if request.query_string:
            url += f"?{request.query_string}"
        return any(
            twilio.validate_signature(secret, candidate, pairs, signature)
            for candidate in twilio.signed_url_variants(url)
        )

    def _publish(self, webhook: twilio.CallWebhook, answer: str | None = None) -> None:
        self.calls.publish(
            control.CarrierStatus(
                call_sid=webhook.call_sid,
                carrier="twilio",
                status=webhook.status or None,
                caller=webhook.caller or None,
                callee=webhook.callee or None,
                direction=webhook.direction or None,
                duration_s=webhook.duration_s,
                answer=answer,
            )
        )
