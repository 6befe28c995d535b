"""The job domain, in the order a row flows through it (the README's Architecture section walks one row).

Submission:  input/ (CSV and JSON into Operations) → skus, product_names, catalogs (the tenant's licenses)
             → schedule (rows dated ahead held for their day) → submit (stage, quotas, reserve seats, commit)
             → store (Redis: record, chunks, results) → scheduler (dispatch)
A chunk:     chunks (claim, read, hand back / park / complete) → executor (the round driver) → steps (one
             user's next step, pure) and faults (the tenant's faults, pure) → plan (with holdings: how
             each license is held, directly or through groups), reasons; group_names; prefetch;
             due (a chunk handed back waits there until it is sent again)
Its books:   record (the job record), counters (counter names, plan counters), lifecycle (a chunk's
             live states), seats (the seat ledger and table), quotas, scripts (the Lua of lua/)
Afterwards:  progress (status, rate, ETA) → control (cancel, resume, pause) → approval (a second key's go-ahead)
             → rollback; events →
             audit_listener, notify (with its outbox); audit, idempotency
"""
