"""The inbox: an event's whole life, from the request that brings it to the state it ends in.

    intake      every event enters here: `accept` stores, commits, enqueues (503 if it cannot);
                a lost or deleted deal is work only when the bridge invoiced it
    repository  the inbox's SQL: store once, reopen, claim with a lease, what is due
    lifecycle   every change of state, and nothing else (no I/O)
    runner      runs one claimed event and decides what its result means: an invoice, the
                change check of an invoiced deal (`app.invoice_changes`), a lost or deleted
                deal's invoice (`app.cancellation`), a status callback
    tasks       the manager's CRM task: one per deal and reason, completed once resolved
    ops         what ops do by hand: replay, discard, replay what the mapping now covers
    reconcile   deals in the invoice stage whose webhook never came

The states (`models.EventState`) and what moves an event between them:

    accept ─┬─ not work (another stage, a deal never invoiced, a callback not ours) ─▶ skipped
            └─▶ pending ─claim─▶ run ─┬─▶ invoiced | skipped | needs_mapping | failed | applied
                  │   │               │   unchanged | changed | reissued | voided | kept
                  ▲   ▲               ├─ transient error, a rung left ─▶ retrying ─claim─▶ run
                  │   │               ├─ no rung left, or the job stopped too often ─▶ failed
                  │   │               └─ a grant needs re-authorisation ─▶ waiting_connection
                  │   └──── resume: that connection is active again ◀───────────────┘
                  └──── start over (`lifecycle.fresh_start`, counters and task cleared):
                          reopen  a newer move of the deal into the stage, from skipped,
                                  needs_mapping, failed, invoiced, unchanged, changed or
                                  reissued (never discarded)
                          replay  ops, from any state (an invoiced deal is not invoiced twice)

    discard: ops end an event that is still running, or a failed one ─▶ discarded

The task work an ended event owes (`models.TaskState`), offered again every minute until it
succeeds, given up (`failed`) after ten tries, never holding up an invoice:

    needs_mapping | failed | changed | kept ─▶ pending ─▶ created  the manager's task, or the
                                         deal's still-open task for the same reason, updated
    invoiced | unchanged | reissued | voided, tasks open ─▶ pending ─▶ closed  the bridge's
                                         open tasks for the deal completed
"""
