"""Alerts that reach a person: what needs ops, by email and/or a signed webhook.

Decoupled from the event lifecycle: a worker cron job scans durable state (the inbox, the
connections, the last Kommo hook check) instead of being called by the code that changes it.

- `config.py`: `AlertConfig`, checked whole when Settings load (channels, SMTP_URL).
- `causes.py`: what each kind of alert means and what to do about it.
- `detect.py`: durable state → findings (one per thing that needs a person).
- `check.py`: one scanner at a time (a lease in the database); a finding becomes an alert, at
  most one per cause per ALERT_DIGEST_MINUTES, the rest waits for the digest.
- `channels.py`: email (SMTP) and the signed webhook (Standard Webhooks).
- `delivery.py`: the outbox: claim, send with a timeout, retry on a bounded ladder.
- `repository.py`: every query of the above; `job.py`: what the worker's cron job runs (the
  job itself, `app.workers.main.alerts_job`, like every job a thin call from the worker).
- `models.py`: the outbox, the causes, the scanner's row and the marks of alerted endings.
"""
