"""Parsing Kommo's bracketed form bodies, from captured real ones to hostile ones."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from app.clients.kommo.webhook import WebhookFormatError, parse_bracketed_form, parse_webhook

# Sample A of the Kommo reference (a captured 2016 amoCRM status change), as sent on the wire.
SAMPLE_A = urlencode(
    [
        ("leads[status][0][id]", "31926520"),
        ("leads[status][0][name]", "Some test lead"),
        ("leads[status][0][status_id]", "10216994"),
        ("leads[status][0][old_status_id]", "10216995"),
        ("leads[status][0][price]", "1000"),
        ("leads[status][0][responsible_user_id]", "938348"),
        ("leads[status][0][last_modified]", "1456820780"),
        ("leads[status][0][modified_user_id]", "102525"),
        ("leads[status][0][created_user_id]", "102525"),
        ("leads[status][0][date_create]", "1456808154"),
        ("leads[status][0][pipeline_id]", "2116"),
        ("leads[status][0][account_id]", "10216991"),
        ("leads[status][0][custom_fields][0][id]", "1119321"),
        ("leads[status][0][custom_fields][0][name]", "Some text field"),
        ("leads[status][0][custom_fields][0][values][0][value]", "some text"),
        ("account[subdomain]", "test000002"),
    ]
).encode()


def test_sample_a_status_change_with_custom_fields() -> None:
    hook = parse_webhook(SAMPLE_A)

    assert hook.account.subdomain == "test000002" and hook.account.id is None
    (entry,) = hook.entries
    assert (entry.entity, entry.action, entry.entity_id) == ("leads", "status", "31926520")
    assert entry.int_field("status_id") == 10216994 and entry.int_field("pipeline_id") == 2116
    assert entry.changed_at == 1456820780  # older bodies only carry last_modified
    assert entry.fields["custom_fields"] == {
        "0": {"id": "1119321", "name": "Some text field", "values": {"0": {"value": "some text"}}}
    }


def test_several_entries_and_actions_in_one_body_are_all_returned_in_order() -> None:
    body = urlencode(
        [
            ("leads[status][1][id]", "2"),
            ("leads[status][1][status_id]", "20"),
            ("leads[status][1][pipeline_id]", "5"),
            ("leads[status][0][id]", "1"),
            ("leads[status][0][status_id]", "10"),
            ("leads[status][0][pipeline_id]", "5"),
            ("leads[status][0][updated_at]", "1700000001"),
            ("leads[update][0][id]", "3"),
            ("contacts[add][0][id]", "9"),
            ("account[id]", "77"),
            ("account[subdomain]", "acme"),
            ("account[_links][self]", "https://acme.kommo.com"),
        ]
    ).encode()

    hook = parse_webhook(body)

    assert hook.account.self_url == "https://acme.kommo.com"
    assert [(e.entity, e.action, e.entity_id) for e in hook.entries] == [
        ("leads", "status", "1"),
        ("leads", "status", "2"),
        ("leads", "update", "3"),
        ("contacts", "add", "9"),
    ]
    assert hook.entries[0].changed_at == 1700000001


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"leads": []}', "not a form-encoded body"),
        (b"leads[status][0][id]=1", "missing account"),
        (b"account[id]=1", "no events"),
        (b"account[id]=1&leads[status][0][status_id]=5", "has no [id]"),
        (b"account[id]=1&leads[status][0][id]=abc", "must be an integer"),
        (b"account[id]=1&leads[status][x][id]=1", "index must be a number"),
        (b"account[id]=1&leads[status][][id]=1", "[] without an index"),
        (b"account[id]=1&leads=5&leads[status][0][id]=1", "conflicts"),
        (b"account[id]=1&leads[status][0][id]=1&leads[status][0]=x", "conflicts"),
        (b"account[id]=1&leads[status]=1", "indexed entries"),
        (b"account[id]=1&leads[status][0][id]=1&leads[status", "not a form-encoded body"),
        (b"account[id]=1&leads[status]x[0][id]=1", "malformed key"),
        (b"\xff\xfe", "not UTF-8"),
        (b"account[id]=1&Leads[status][0][id]=1", "unknown entity name"),
        ("account[id]=1&leads[status][0][id]=²".encode(), "must be an integer"),
        ("account[id]=1&leads[status][²][id]=1".encode(), "index must be a number"),
        (b"account[id]=1&contacts[add][0][id]=a%00b", "NUL character"),
        (b"account[id]=1&contacts[add][0][id]=a%01b", "control characters"),
        (b"account[id]=1&" + b"e" * 16 + b"[add][0][id]=1", "unknown entity name"),
        (b"account[id]=1&leads[" + b"x" * 40 + b"][0][id]=1", "unknown action name"),
        (b"account[id]=1&contacts[add][0][id]=" + b"9" * 40, "too long"),
        (b"account[id]=1&leads[status][0][id]=99999999999999999999", "must be an integer"),
        (b"account[id]=1&a" + b"[b]" * 12 + b"=1", "nested deeper than 12"),
        (b"account[id]=1&leads[status][" + b"9" * 5000 + b"][id]=1", "longer than 64"),
        (b"account[id]=1&leads[status][0000001][id]=1", "at most 6 digits"),
        (b"account[id]=1&leads[status][0][" + b"f" * 65 + b"]=1", "longer than 64"),
    ],
)
def test_malformed_bodies_are_refused_with_a_message_naming_the_problem(
    body: bytes, message: str
) -> None:
    with pytest.raises(WebhookFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_webhook(body)


@pytest.mark.parametrize("value", ["x", "99999999999999999999", "-5"])
@pytest.mark.parametrize("field", ["status_id", "pipeline_id", "updated_at"])
def test_numbers_that_cannot_be_stored_are_refused(value: str, field: str) -> None:
    body = f"account[id]=1&leads[status][0][id]=1&leads[status][0][{field}]={value}"
    with pytest.raises(WebhookFormatError, match=field):
        parse_webhook(body.encode())


def test_too_many_fields_are_refused() -> None:
    body = "&".join(f"k{i}=v" for i in range(10_001)).encode()
    with pytest.raises(WebhookFormatError, match="not a form-encoded body"):
        parse_bracketed_form(body)


def test_catalog_hooks_ten_levels_deep_are_parsed() -> None:
    """The key layout of a Kommo invoice-list element hook (see the contract fixture
    tests/contracts/kommo/webhooks/catalog_invoice_add_reconstructed.json)."""
    body = urlencode(
        [
            ("catalogs[add][0][custom_fields][3][values][0][value][entity_id]", "501"),
            ("catalogs[add][0][custom_fields][1][values][0][value][unit_price]", "10.5"),
            ("catalogs[add][0][custom_fields][1][values][0][value][discount][value]", "5"),
            ("account[id]", "77"),
        ]
    ).encode()

    (entry,) = parse_webhook(body).entries

    assert (entry.entity, entry.action, entry.entity_id) == ("catalogs", "add", "")
    price = entry.fields["custom_fields"]["1"]["values"]["0"]["value"]
    assert price == {"unit_price": "10.5", "discount": {"value": "5"}}


def test_a_lead_custom_field_whose_value_is_an_object_is_parsed() -> None:
    body = urlencode(
        [
            ("leads[update][0][id]", "7"),
            ("leads[update][0][custom_fields][0][values][0][value][name]", "Ada"),
            ("leads[update][0][custom_fields][0][values][0][value][vat_id][number]", "GB1"),
            ("account[id]", "77"),
        ]
    ).encode()

    (entry,) = parse_webhook(body).entries

    value = entry.fields["custom_fields"]["0"]["values"]["0"]["value"]
    assert (entry.entity_id, value) == ("7", {"name": "Ada", "vat_id": {"number": "GB1"}})


def test_at_most_500_entries_per_body() -> None:
    def body(count: int) -> bytes:
        pairs = [(f"contacts[update][{i}][id]", str(i + 1)) for i in range(count)]
        return urlencode([*pairs, ("account[id]", "77")]).encode()

    assert len(parse_webhook(body(500)).entries) == 500
    with pytest.raises(WebhookFormatError, match="more than 500 entries in one body"):
        parse_webhook(body(501))


def test_only_a_lead_entry_needs_an_id() -> None:
    hook = parse_webhook(b"task[update][0][text]=call&account[id]=77")

    assert [(e.entity, e.action, e.entity_id) for e in hook.entries] == [("task", "update", "")]
