"""What an unexpected failure leaves in the logs: the request id and where it failed, never a reviewer's
personal data (PostgreSQL's DETAIL quotes the failing row: e-mail, name, body)."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.api import factories

PRIVATE = {"email": "private.person@example.com", "name": "Private Person"}


async def test_a_database_error_is_logged_without_the_row_it_quotes(
    client: TestClient, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await factories.characteristic(db, 7, "Fit")
    # A rule the database has and the API does not check: PostgreSQL refuses the row, quoting it.
    await db.execute(
        "ALTER TABLE reviews ADD CONSTRAINT test_no_private_person "
        "CHECK (reviewer_name <> 'Private Person') NOT VALID"
    )
    try:
        with caplog.at_level(logging.ERROR, logger="atelier_api.errors"):
            response = await client.post("/reviews", json=factories.review_body(7, **PRIVATE))
    finally:
        await db.execute("ALTER TABLE reviews DROP CONSTRAINT test_no_private_person")

    assert response.status == 500
    assert await response.json() == {"error": "internal server error", "details": []}
    [logged] = [record for record in caplog.records if record.getMessage().startswith("unexpected error")]
    text = caplog.text
    assert "test_no_private_person" in text and "CheckViolationError" in text  # what failed, and where
    assert "Traceback" in text and logged.exc_info is not None
    for value in (*PRIVATE.values(), factories.review_body(7)["body"]):
        assert value not in text, value
