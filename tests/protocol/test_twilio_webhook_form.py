"""Twilio's call webhooks, sans-I/O: form signing, the form's fields, TwiML and public URLs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from xswarm.protocol import twilio

# Twilio's own worked example ("Validating requests", webhooks security docs).
DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOCS_TOKEN = "12345"
DOCS_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOCS_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_form_signature_matches_twilios_published_example() -> None:
    assert twilio.expected_signature(DOCS_TOKEN, DOCS_URL, DOCS_PARAMS) == DOCS_SIGNATURE
    pairs = list(DOCS_PARAMS.items())[::-1]  # the order sent does not matter
    assert twilio.validate_signature(DOCS_TOKEN, DOCS_URL, pairs, DOCS_SIGNATURE)
    assert not twilio.validate_signature(DOCS_TOKEN, DOCS_URL + "&x=1", pairs, DOCS_SIGNATURE)
    tampered = [*pairs[:-1], ("CallSid", "CA1234567890ABCDF")]
    assert not twilio.validate_signature(DOCS_TOKEN, DOCS_URL, tampered, DOCS_SIGNATURE)


class MultiDict(dict[str, list[str]]):
    def getall(self, name: str) -> list[str]:
        return self[name]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("StatusCallbackEvent", "ringing"), ("StatusCallbackEvent", "answered"), ("A", "")],
        [("Z", "1"), ("a", "2"), ("é", "ü"), ("B", "x"), ("B", "x")],
    ],
)
def test_form_signature_agrees_with_twilios_validator(pairs: list[tuple[str, str]]) -> None:
    """Repeated fields, empty values, case and non-ASCII sign as the twilio library signs."""
    grouped = MultiDict()
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    reference = RequestValidator("tok").compute_signature("https://h/twilio/voice", grouped)
    assert twilio.expected_signature("tok", "https://h/twilio/voice", pairs) == reference


def test_signed_url_variants_cover_the_port_as_twilio_may_sign_it() -> None:
    assert twilio.signed_url_variants("https://h.example/twilio/voice?x=1") == (
        "https://h.example/twilio/voice?x=1",
        "https://h.example:443/twilio/voice?x=1",
    )
    assert twilio.signed_url_variants("https://h.example:8443/v") == (
        "https://h.example:8443/v",
        "https://h.example/v",
    )


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def test_a_voice_webhook_form_reads_as_its_call() -> None:
    body = form(
        CallSid="CA" + "a" * 32,
        AccountSid="AC" + "b" * 32,
        From="+14155550100",
        To="+14155550199",
        Direction="inbound",
        CallStatus="ringing",
        CallerCity="SAN FRANCISCO",
    )
    pairs = twilio.parse_form(body, "application/x-www-form-urlencoded; charset=utf-8")
    call = twilio.parse_call_webhook(pairs, status_required=False)
    assert call == twilio.CallWebhook(
        call_sid="CA" + "a" * 32,
        account_sid="AC" + "b" * 32,
        caller="+14155550100",
        callee="+14155550199",
        direction="inbound",
        status="ringing",
    )
    status = twilio.parse_call_webhook(
        twilio.parse_form(
            form(CallSid="CA1", CallStatus="completed", CallDuration="42", SequenceNumber="3"),
            twilio.FORM_CONTENT_TYPE,
        ),
        status_required=True,
    )
    assert (status.status, status.duration_s, status.sequence) == ("completed", 42, 3)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"CallSid=CA1", "application/json", 415, "Content-Type"),
        (b"CallSid=CA1", "", 415, "missing"),
        (b"x" * (twilio.MAX_FORM_BYTES + 1), twilio.FORM_CONTENT_TYPE, 413, "exceeds"),
        ("CallSid=CA1&From=é".encode(), twilio.FORM_CONTENT_TYPE, 400, "non-ASCII"),
        (b"CallSid=CA1&From=%ff", twilio.FORM_CONTENT_TYPE, 400, "malformed or not UTF-8"),
        (b"CallSid", twilio.FORM_CONTENT_TYPE, 400, "malformed"),
        (b"&".join([b"a=1"] * 300), twilio.FORM_CONTENT_TYPE, 400, "too many fields"),
    ],
)
def test_a_body_that_is_not_a_form_is_refused_with_its_status(
    body: bytes, content_type: str, status: int, words: str
) -> None:
    with pytest.raises(twilio.FormError) as refused:
        twilio.parse_form(body, content_type)
    assert refused.value.status == status
    assert words in str(refused.value)


@pytest.mark.parametrize(
    ("pairs", "status_required", "words"),
    [
        ([("From", "+1")], False, 'missing "CallSid"'),
        ([("CallSid", "CA\n1")], False, '"CallSid" must be 1 to 64'),
        ([("CallSid", "CA" + "1" * 80)], False, '"CallSid" must be 1 to 64'),
        ([("CallSid", "CA1"), ("CallSid", "CA2")], False, "sent twice"),
        ([("CallSid", "CA1"), ("From", "+1\u2028forged")], False, '"From" must be'),
        ([("CallSid", "CA1"), ("To", "1" * 129)], False, '"To" must be'),
        ([("CallSid", "CA1"), ("AccountSid", "AC 1")], False, '"AccountSid"'),
        ([("CallSid", "CA1")], True, 'missing "CallStatus"'),
        ([("CallSid", "CA1"), ("CallStatus", "Ringing!")], True, "not a call status"),
        ([("CallSid", "CA1"), ("Direction", "in bound")], False, "not a call direction"),
        (
            [("CallSid", "CA1"), ("CallStatus", "completed"), ("CallDuration", "-3")],
            True,
            '"CallDuration" must be a whole number',
        ),
        (
            [("CallSid", "CA1"), ("CallStatus", "completed"), ("CallDuration", "1e3")],
            True,
            '"CallDuration" must be a whole number',
        ),
    ],
)
def test_a_form_with_a_wrong_field_names_it(
    pairs: list[tuple[str, str]], status_required: bool, words: str
) -> None:
    with pytest.raises(twilio.FormError) as refused:
        twilio.parse_call_webhook(pairs, status_required)
    assert refused.value.status == 400
    assert words in str(refused.value)


def test_a_repeated_identical_field_and_a_newer_status_are_accepted() -> None:
    call = twilio.parse_call_webhook(
        [("CallSid", "CA1"), ("CallSid", "CA1"), ("CallStatus", "answered-by-machine")], True
    )
    assert call.status == "answered-by-machine"


def test_connect_twiml_escapes_what_the_caller_chose() -> None:
    twiml = twilio.connect_twiml(
        "wss://h/twilio?a=1&b=2",
        [("From", 'client:"><Hangup/>&'), ("To", "+1\x07"), ("CallSid", "CA1")],
    )
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://h/twilio?a=1&b=2"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {"From": 'client:"><Hangup/>&', "To": "+1", "CallSid": "CA1"}
    assert root.find("Hangup") is None


def test_say_hangup_twiml() -> None:
    root = ET.fromstring(twilio.say_hangup_twiml("Busy <now> & later"))
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.findtext("Say") == "Busy <now> & later"


@pytest.mark.parametrize(
    ("public_url", "stream", "voice"),
    [
        ("wss://v.example.com", "wss://v.example.com/twilio", "https://v.example.com/twilio/voice"),
        ("wss://e.com/voice/", "wss://e.com/voice/twilio", "https://e.com/voice/twilio/voice"),
        (
            "wss://e.com/voice/twilio",
            "wss://e.com/voice/twilio",
            "https://e.com/voice/twilio/voice",
        ),
        ("https://e.com:8443", "wss://e.com:8443/twilio", "https://e.com:8443/twilio/voice"),
        ("ws://127.0.0.1:9998", "ws://127.0.0.1:9998/twilio", "http://127.0.0.1:9998/twilio/voice"),
    ],
)
def test_public_urls_of_the_stream_and_the_webhooks(
    public_url: str, stream: str, voice: str
) -> None:
    assert twilio.stream_url(public_url) == stream
    assert twilio.webhook_url(public_url, twilio.VOICE_PATH) == voice


@pytest.mark.parametrize("number", ["+14155550100", "+442071838750", "+12"])
def test_e164_numbers_are_accepted(number: str) -> None:
    assert twilio.e164_problem(number) is None


@pytest.mark.parametrize("number", ["14155550100", "+0415", "+1 415 555", "+1234567890123456", ""])
def test_other_numbers_are_refused_with_an_example(number: str) -> None:
    problem = twilio.e164_problem(number)
    assert problem is not None and "+14155550100" in problem
