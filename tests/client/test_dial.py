"""Issue 10 item 5: ``xswarm call --dial`` through the twilio library, against a local
stand-in for api.twilio.com that checks each request as Twilio's API would receive it."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from click.testing import CliRunner

from xswarm.cli import cli
from xswarm.client import dial
from xswarm.client.common import ClientError

ACCOUNT = "AC" + "a" * 32
TOKEN = "auth-token-for-dial-tests"
PUBLIC = "wss://voice.example.com/prefix"
CREDENTIALS = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}


@dataclass
class FakeTwilioApi:
    """api.twilio.com's Calls resource: Basic auth, a form body, Twilio's JSON answers."""

    url: str = ""
    requests: list[list[tuple[str, str]]] = field(default_factory=list)
    refuse_with: dict[str, object] | None = None

    async def create_call(self, request: web.Request) -> web.Response:
        if request.match_info["account"] != ACCOUNT:
            return web.json_response({"code": 20404, "status": 404}, status=404)
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        assert request.content_type == "application/x-www-form-urlencoded"
        form = await request.post()
        self.requests.append([(k, str(v)) for k, v in form.items()])
        if self.refuse_with is not None:
            return web.json_response(self.refuse_with, status=int(str(self.refuse_with["status"])))
        return web.json_response(
            {
                "sid": "CA" + "f" * 32,
                "account_sid": ACCOUNT,
                "status": "queued",
                "to": form["To"],
                "from": form["From"],
                "direction": "outbound-api",
                "api_version": "2010-04-01",
            },
            status=201,
        )


@pytest.fixture
async def api() -> AsyncIterator[FakeTwilioApi]:
    fake = FakeTwilioApi()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", fake.create_call)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


async def test_dial_creates_a_call_answered_by_the_bridges_webhook(api: FakeTwilioApi) -> None:
    placed = await asyncio.to_thread(
        dial.dial, "+14155550199", "+14155550100", PUBLIC, api.url, CREDENTIALS
    )
    assert placed == dial.DialedCall("CA" + "f" * 32, "queued", "+14155550199", "+14155550100")
    (sent,) = api.requests
    assert sorted(sent) == sorted(
        [
            ("To", "+14155550199"),
            ("From", "+14155550100"),
            ("Url", "https://voice.example.com/prefix/twilio/voice"),
            ("Method", "POST"),
            ("StatusCallback", "https://voice.example.com/prefix/twilio/status"),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ]
    )


async def test_twilios_refusal_is_one_line_with_its_code(api: FakeTwilioApi) -> None:
    api.refuse_with = {
        "code": 21211,
        "message": "Invalid 'To' Phone Number: +1415555XXXX",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    with pytest.raises(ClientError, match=r"HTTP 400, error 21211\): .*Invalid 'To' Phone Number"):
        await asyncio.to_thread(
            dial.dial, "+14155550199", "+14155550100", PUBLIC, api.url, CREDENTIALS
        )


async def test_wrong_credentials_are_refused_by_the_api(api: FakeTwilioApi) -> None:
    wrong = CREDENTIALS | {"TWILIO_AUTH_TOKEN": "wrong"}
    with pytest.raises(ClientError, match="HTTP 401, error 20003"):
        await asyncio.to_thread(dial.dial, "+14155550199", "+14155550100", PUBLIC, api.url, wrong)


@pytest.mark.parametrize(
    ("to", "from_", "environ", "words"),
    [
        ("4155550199", "+14155550100", CREDENTIALS, "--dial: '4155550199' is not an E.164"),
        ("+14155550199", "+1 415", CREDENTIALS, "--from: '+1 415' is not an E.164"),
        ("+14155550199", "+14155550100", {}, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN not set"),
        ("+14155550199", "+14155550100", {"TWILIO_ACCOUNT_SID": ACCOUNT}, "TWILIO_AUTH_TOKEN not"),
    ],
)
def test_bad_numbers_and_missing_credentials_stop_before_any_request(
    to: str, from_: str, environ: dict[str, str], words: str
) -> None:
    with pytest.raises(ClientError, match=re.escape(words)):
        dial.dial(to, from_, PUBLIC, "http://127.0.0.1:9", environ)


async def test_the_cli_dials_with_credentials_from_the_environment(api: FakeTwilioApi) -> None:
    args = [
        "call",
        "--dial",
        "+14155550199",
        "--from",
        "+14155550100",
        "--public-url",
        PUBLIC,
        "--twilio-api",
        api.url,
        "--config",
        "/dev/null",
    ]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=CREDENTIALS)
    assert result.exit_code == 0, result.output
    assert f"Twilio call CA{'f' * 32}: queued, +14155550100 -> +14155550199" in result.output
    assert len(api.requests) == 1
    lonely = await asyncio.to_thread(
        CliRunner().invoke, cli, ["call", "--dial", "+14155550199", "--public-url", PUBLIC]
    )
    assert lonely.exit_code == 2 and "--dial and --from go together" in lonely.output
