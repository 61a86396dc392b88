"""What a bridge needs to work against the demo seed, by the bridge's setting names.

`sagebridge run` with no Kommo/Sage credentials (app/settings.py) fills every unset upstream
setting from `SANDBOX_DEFAULTS`; the ids are the seed's own (sandbox/seed.py).
"""

from __future__ import annotations

from typing import Any

from sandbox import seed

SAGE_PORT = 8701
KOMMO_PORT = 8702

SANDBOX_DEFAULTS: dict[str, Any] = {
    "kommo_base_url": f"http://127.0.0.1:{KOMMO_PORT}",
    "kommo_access_token": seed.KOMMO_TOKEN,
    "kommo_account_id": seed.KOMMO_ACCOUNT_ID,
    "kommo_subdomain": seed.KOMMO_SUBDOMAIN,
    "kommo_webhook_secret": "sandbox-webhook-secret",
    "kommo_trigger_pipeline_id": seed.PIPELINE_SALES,
    "kommo_trigger_status_id": seed.STATUS_RAISE_INVOICE,
    "kommo_invoice_number_field_id": seed.FIELD_INVOICE_NUMBER,
    "kommo_invoice_link_field_id": seed.FIELD_INVOICE_LINK,
    "kommo_payment_status_field_id": seed.FIELD_PAYMENT_STATUS,
    "kommo_payment_status_enums": {
        "unpaid": seed.ENUM_UNPAID,
        "part_paid": seed.ENUM_PART_PAID,
        "paid": seed.ENUM_PAID,
        "overdue": seed.ENUM_OVERDUE,
        "void": seed.ENUM_VOID,
        "credited": seed.ENUM_CREDITED,
    },
    "kommo_amount_paid_field_id": seed.FIELD_AMOUNT_PAID,
    "kommo_amount_outstanding_field_id": seed.FIELD_AMOUNT_OUTSTANDING,
    "kommo_last_payment_date_field_id": seed.FIELD_LAST_PAYMENT_DATE,
    "kommo_credit_notes_field_id": seed.FIELD_CREDIT_NOTES,
    "kommo_credited_amount_field_id": seed.FIELD_CREDITED_AMOUNT,
    "sage_base_url": f"http://127.0.0.1:{SAGE_PORT}/v3.1",
    "sage_access_token": seed.SAGE_TOKEN,
    "sage_business_id": seed.SAGE_BUSINESS_ID,
    # Known to anyone who reads this file: fine for a sandbox bound to 127.0.0.1, nowhere else.
    "ops_api_token": "sandbox-ops-token-for-127.0.0.1-only",
}

# Published with the sandbox (README, sandbox/README.md): the bridge's log redaction lets
# exactly these through, so the commands it logs for a newcomer work as printed.
PUBLIC_TOKENS = frozenset({seed.SAGE_TOKEN, seed.KOMMO_TOKEN, SANDBOX_DEFAULTS["ops_api_token"]})
