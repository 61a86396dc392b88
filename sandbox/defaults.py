"""What a bridge needs to work against the demo seed, by the bridge's setting names.

`sagebridge run` with no Kommo/Sage credentials (app/settings.py) fills every unset upstream
setting from `SANDBOX_DEFAULTS`; the ids are the seed's own (sandbox/seed.py).
"""

from __future__ import annotations

from typing import Any

from sandbox.seed import (
    ENUM_OVERDUE,
    ENUM_PAID,
    ENUM_PART_PAID,
    ENUM_UNPAID,
    ENUM_VOID,
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    FIELD_PAYMENT_STATUS,
    KOMMO_ACCOUNT_ID,
    KOMMO_SUBDOMAIN,
    KOMMO_TOKEN,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    SAGE_TOKEN,
    STATUS_RAISE_INVOICE,
)

SAGE_PORT = 8701
KOMMO_PORT = 8702

SANDBOX_DEFAULTS: dict[str, Any] = {
    "kommo_base_url": f"http://127.0.0.1:{KOMMO_PORT}",
    "kommo_access_token": KOMMO_TOKEN,
    "kommo_account_id": KOMMO_ACCOUNT_ID,
    "kommo_subdomain": KOMMO_SUBDOMAIN,
    "kommo_webhook_secret": "sandbox-webhook-secret",
    "kommo_trigger_pipeline_id": PIPELINE_SALES,
    "kommo_trigger_status_id": STATUS_RAISE_INVOICE,
    "kommo_invoice_number_field_id": FIELD_INVOICE_NUMBER,
    "kommo_invoice_link_field_id": FIELD_INVOICE_LINK,
    "kommo_payment_status_field_id": FIELD_PAYMENT_STATUS,
    "kommo_payment_status_enums": {
        "unpaid": ENUM_UNPAID,
        "part_paid": ENUM_PART_PAID,
        "paid": ENUM_PAID,
        "overdue": ENUM_OVERDUE,
        "void": ENUM_VOID,
    },
    "sage_base_url": f"http://127.0.0.1:{SAGE_PORT}/v3.1",
    "sage_access_token": SAGE_TOKEN,
    "sage_business_id": SAGE_BUSINESS_ID,
    # Known to anyone who reads this file: fine for a sandbox bound to 127.0.0.1, nowhere else.
    "ops_api_token": "sandbox-ops-token-for-127.0.0.1-only",
}
