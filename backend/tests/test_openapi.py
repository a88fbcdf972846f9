"""The OpenAPI document: the tutorial's contract kept, every answer documented, bearer auth
declared when tokens are configured (so Swagger UI's "Authorize" works).

``data/tutorial_openapi.json`` is the schema of the tutorial app as it ships
(``../shared/baseline/tutorial_app.py``: ``app.openapi()``, dumped with sorted keys): what
clients generated from the tutorial were built against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from heroes.config import Settings
from heroes.main import create_app

TUTORIAL = json.loads((Path(__file__).parent / "data" / "tutorial_openapi.json").read_text())
TOKEN = "openapi-token-0123456789"
OPERATIONS = [(path, method) for path, item in TUTORIAL["paths"].items() for method in item]
WRITES = {"post", "patch", "delete"}


def schema(**settings: Any) -> dict[str, Any]:
    document: dict[str, Any] = create_app(
        Settings(database_url="sqlite:///unused.db", **settings)
    ).openapi()
    return document


def _types(prop: dict[str, Any]) -> set[str]:
    options = prop.get("anyOf", [prop])
    return {option["type"] for option in options if "type" in option}


def test_the_tutorials_operations_keep_their_ids_bodies_and_parameters() -> None:
    ours = schema()
    assert len(OPERATIONS) == 5
    for path, method in OPERATIONS:
        theirs, mine = TUTORIAL["paths"][path][method], ours["paths"][path][method]
        assert mine["operationId"] == theirs["operationId"]
        assert mine.get("requestBody", {}).get("content") == theirs.get("requestBody", {}).get(
            "content"
        )
        success = theirs["responses"]["200"]["content"]["application/json"]["schema"]
        if success:  # DELETE's {"ok": true} is untyped in the tutorial: ours may say more
            assert mine["responses"]["200"]["content"]["application/json"]["schema"] == success
        mine_params = {(p["name"], p["in"]): p for p in mine.get("parameters", [])}
        for param in theirs.get("parameters", []):
            kept = mine_params[param["name"], param["in"]]
            assert kept.get("required", False) == param.get("required", False)
        # Parameters we added are optional: a tutorial client never sends them.
        added = set(mine_params) - {(p["name"], p["in"]) for p in theirs.get("parameters", [])}
        assert not [key for key in added if mine_params[key].get("required")]


@pytest.mark.parametrize("model", ["HeroCreate", "HeroPublic", "HeroUpdate", "HTTPValidationError"])
def test_the_tutorials_models_keep_their_names_fields_and_types(model: str) -> None:
    theirs = TUTORIAL["components"]["schemas"][model]
    mine = schema()["components"]["schemas"][model]
    assert set(mine["properties"]) == set(theirs["properties"])
    assert set(mine.get("required", [])) == set(theirs.get("required", []))
    for name, prop in theirs["properties"].items():
        # Narrower is fine (e.g. HeroUpdate.name refuses null: a 500 in the tutorial), never other.
        assert _types(mine["properties"][name]) <= _types(prop), name


def test_every_status_the_api_answers_is_documented() -> None:
    paths = schema()["paths"]
    for path, method in OPERATIONS:
        expected = {"200", "400", "413", "422", "429", "503"}  # 429/503 also from the proxy
        expected |= {"404"} if "{hero_id}" in path else set()
        if method != "get":  # the writes take an Idempotency-Key: 409 while its first is served
            expected.add("409")
        assert set(paths[path][method]["responses"]) == expected, (path, method)
        unavailable = paths[path][method]["responses"]["503"]
        assert "Retry-After" in unavailable["headers"]
        assert unavailable["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorDetail"
        }


def test_405_and_its_allow_header_are_described_for_the_whole_api() -> None:
    # 405 belongs to no operation (it answers the methods a path has none for).
    description = schema()["info"]["description"]
    for status in ("400", "401", "404", "405", "409", "413", "422", "503"):
        assert f"| {status} |" in description
    assert "`Allow`" in description


def test_without_tokens_nothing_is_protected_or_promises_401() -> None:
    document = schema()
    assert "securitySchemes" not in document.get("components", {})
    for path, method in OPERATIONS:
        operation = document["paths"][path][method]
        assert "security" not in operation
        assert "401" not in operation["responses"]


@pytest.mark.parametrize("protect_reads", [False, True])
def test_with_tokens_protected_operations_declare_bearer_auth(protect_reads: bool) -> None:
    document = schema(api_tokens=[SecretStr(TOKEN)], auth_protect_reads=protect_reads)
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the API_TOKENS configured on the server.",
        }
    }
    for path, method in OPERATIONS:
        operation = document["paths"][path][method]
        protected = method in WRITES or protect_reads
        assert operation.get("security") == ([{"bearerAuth": []}] if protected else None)
        assert ("401" in operation["responses"]) is protected
        if protected:
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]


def test_the_bounds_the_api_enforces_are_in_the_schema() -> None:
    # What a fuzzer or a client generator reads: NUL refused, age within the INTEGER column.
    schemas = schema()["components"]["schemas"]
    for model in ("HeroCreate", "HeroUpdate"):
        properties = schemas[model]["properties"]
        assert properties["name"]["pattern"] == "^[^\\u0000]*$"
        assert properties["secret_name"]["pattern"] == "^[^\\u0000]*$"
        [integer] = [o for o in properties["age"]["anyOf"] if o.get("type") == "integer"]
        assert (integer["minimum"], integer["maximum"]) == (0, 2**31 - 1)
        assert not {"ge", "le"} & set(integer)


def test_the_proxys_rate_limit_and_shedding_answers_are_documented() -> None:
    # deploy/haproxy/haproxy.cfg answers these itself, on every operation but the health checks.
    document = schema()
    for path, method in OPERATIONS:
        responses = document["paths"][path][method]["responses"]
        limited = responses["429"]
        assert set(limited["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
        assert limited["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorDetail"
        }
        assert "overloaded" in responses["503"]["description"]
        assert "Retry-After" in responses["503"]["headers"]
    for path in ("/health/live", "/health/ready"):
        assert "429" not in document["paths"][path]["get"]["responses"]
    assert "`429`" in document["info"]["description"]
