"""Sending webhook events: the outbox's delivery side.

``jobs.services.events`` writes one delivery row per event in the transaction
that ends a batch; this package sends them. ``outbox`` claims due rows with a
lease (as the worker claims chunks) and records each attempt; ``sender`` signs
(Standard Webhooks) and POSTs through ``transport``, whose connections refuse
any address the SSRF guard (``jobs.services.webhook_urls``) refuses, checked
on the socket actually connected. The sender loop runs in every worker and in
``manage.py run_housekeeper`` (``jobs.housekeeper``).

Only the worker, commands, the housekeeper and the admin import this package.
"""
