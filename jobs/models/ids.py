"""Public object ids in OpenAI's style (``file-…``, ``batch_…``)."""

import secrets


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def new_worker_id() -> str:
    return "worker-" + secrets.token_hex(6)


# Longer than any id column. A longer string, or one with NUL (which
# PostgreSQL text cannot hold: the query itself fails), names nothing, so
# lookups answer "not found" without asking the database.
MAX_ID_LENGTH = 64


def could_be_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and "\x00" not in value
