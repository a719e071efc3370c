"""``bin/batchsite``: a terminal client for batchsite, or for OpenAI's own Batch API.

Built on the openai SDK alone, so it speaks to any server the SDK speaks to
(``--base-url``/``--api-key`` or ``OPENAI_BASE_URL``/``OPENAI_API_KEY``); batchsite's
extensions (progress, ETA, webhook_url, retry) are used when the server has them.
Nothing here imports Django or the rest of the project: it is a client.
"""
