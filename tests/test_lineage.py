"""Bodies kept in the sync log are truncated and carry no secrets, whatever their format."""

from __future__ import annotations

import json

from app.lineage import MAX_BODY, clip


def test_json_form_and_text_bodies_lose_their_secrets() -> None:
    as_json = clip(b'{"access_token": "t0k", "invoice": {"id": 1}}')
    as_form = clip(b"grant_type=refresh_token&refresh_token=r3fresh&client_secret=s3cret")
    as_text = clip(b"upstream said: Bearer abc.def.ghi is not valid")

    assert json.loads(as_json or "") == {"access_token": "[REDACTED]", "invoice": {"id": 1}}
    assert json.loads(as_form or "") == {
        "grant_type": "refresh_token",
        "refresh_token": "[REDACTED]",
        "client_secret": "[REDACTED]",
    }
    assert as_text == "upstream said: Bearer [REDACTED] is not valid"


def test_long_bodies_are_truncated() -> None:
    clipped = clip("x" * (MAX_BODY + 500))
    assert clipped is not None and len(clipped) == MAX_BODY + 1 and clipped.endswith("…")
    assert clip(None) is None and clip(b"") is None
