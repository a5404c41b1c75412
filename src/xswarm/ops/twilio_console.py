"""What an operator pastes into the Twilio console so that a number's calls reach this bridge.

The bridge's own ``POST /twilio/voice`` answers each call with TwiML built per call; the same
TwiML, with Twilio's template placeholders instead of one call's values, is printed too, for
a TwiML Bin or a reviewer who wants to see what the caller will be connected to.
"""

from __future__ import annotations

from xswarm.config import Config, from_mapping
from xswarm.errors import ConfigError
from xswarm.protocol import twilio

# TwiML Bins fill these in from the call's own request (Twilio's Mustache templates).
TEMPLATE_PARAMETERS = (("From", "{{From}}"), ("To", "{{To}}"), ("CallSid", "{{CallSid}}"))


def public_url_of(config: Config, override: str | None) -> str:
    """The bridge's public URL: ``override``, else ``[voice.bridge] public_url``."""
    if override:
        # Checked as the config key would be: a wss://HOST[/PREFIX] URL.
        return from_mapping(
            {"voice": {"bridge": {"public_url": override}}}, "--public-url"
        ).bridge.public_url
    url = config.bridge.public_url
    if not url:
        raise ConfigError(
            config.source,
            "[voice.bridge] public_url",
            "is empty: set it to the URL at which Twilio reaches this bridge, e.g. "
            "wss://voice.example.com (or pass --public-url)",
        )
    return url


def console_setup(config: Config, public_url: str, number: str | None = None) -> str:
    """The settings for a number's Voice Configuration, then the TwiML the webhook answers."""
    where = f"number {number}" if number else "your number"
    voice = twilio.webhook_url(public_url, twilio.VOICE_PATH)
    status = twilio.webhook_url(public_url, twilio.STATUS_PATH)
    lines = [
        f"Twilio console > Phone Numbers > Manage > Active numbers > {where} > "
        "Voice Configuration:",
        f"  A call comes in:     Webhook  {voice}  HTTP POST",
        f"  Call status changes: {status}  HTTP POST",
        "",
        "The webhook answers each call with (From, To, CallSid filled in per call):",
        twilio.connect_twiml(twilio.stream_url(public_url), TEMPLATE_PARAMETERS),
    ]
    if not voice.startswith("https://"):
        lines.append(
            "warning: Twilio calls webhooks over https:// and streams over wss:// only; "
            "public_url should start with wss:// (TLS: README, Take a real phone call)"
        )
    if config.bridge.twilio_stream_token:
        lines.append(
            "note: twilio_stream_token is on, so only the webhook URL works: a TwiML Bin "
            "cannot mint the per-call xswarm_token the stream then requires"
        )
    return "\n".join(lines)
