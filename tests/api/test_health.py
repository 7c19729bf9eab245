"""GET /healthz (the process serves, whatever the database says) and the X-Replica header."""

from __future__ import annotations

from dataclasses import replace

from atelier_api.app import create_app


async def test_healthz_answers_200_with_json(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_every_response_names_the_replica(db, config, aiohttp_client):
    client = await aiohttp_client(create_app(replace(config, replica_name="api-7")))
    for method, path in [
        ("GET", "/healthz"),
        ("GET", "/reviews?product_id=1"),
        ("GET", "/nowhere"),
        ("DELETE", "/reviews"),
        ("GET", "/reviews?product_id=hello"),
    ]:
        response = await client.request(method, path)
        assert response.headers["X-Replica"] == "api-7", (method, path, response.status)
