"""Public object ids in OpenAI's style (``file-…``, ``batch_…``)."""

import secrets


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def new_worker_id() -> str:
    return "worker-" + secrets.token_hex(6)
