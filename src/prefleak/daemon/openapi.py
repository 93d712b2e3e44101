"""The OpenAPI 3.1 document of the HTTP port, served at ``GET /openapi.json`` (docs/api.md).

Written by hand next to the routes it describes: ``tests/test_openapi.py`` checks that it names
exactly the routes :data:`prefleak.daemon.http.ROUTES` serves, that real answers validate against
its schemas, and runs schemathesis over it. The schemas require the keys clients rely on and
allow more, so a document that grows a key stays valid.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prefleak import __version__
from prefleak.web.assets import ASSETS

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}


def _null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _list(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these keys (and possibly more)."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_INTERVAL = _null({"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2})

SCHEMAS: dict[str, Schema] = {
    "Error": _object({"error": STRING}),
    "Horizon": _null(_object({"start": TIME, "end": TIME})),
    "Estimate": _null(_object({"value": NUMBER, "ci": _INTERVAL})),
    "PLSRow": _object(
        {
            "benchmark": STRING,
            "judge_i": STRING,
            "judge_j": STRING,
            "student_i": STRING,
            "student_j": STRING,
            "relation_i": STRING,
            "relation_j": STRING,
            "share_i": NUMBER,
            "share_j": NUMBER,
            "pls": _null(NUMBER),
            "ci_low": _null(NUMBER),
            "ci_high": _null(NUMBER),
            "n_prompts": INTEGER,
            "undefined": _null(STRING),
            "win_rates": _null(_object({"ii": NUMBER, "ij": NUMBER, "jj": NUMBER, "ji": NUMBER})),
            "q_value": _null(NUMBER),
            "significant": BOOLEAN,
            "min_detectable_pls": _null(NUMBER),
        }
    ),
    "LeakageRow": _object(
        {
            "relation": STRING,
            "log_odds": NUMBER,
            "log_odds_ci": _INTERVAL,
            "effect_pp": NUMBER,
            "effect_pp_ci": _INTERVAL,
            "q_value": _null(NUMBER),
            "significant": BOOLEAN,
            "n_verdicts": INTEGER,
        }
    ),
    "Change": _object(
        {
            "subject": STRING,
            "alarm": BOOLEAN,
            "direction": _null(STRING),
            "started_at": _null(STRING),
            "detected_at": _null(STRING),
            "n_windows": INTEGER,
        }
    ),
    "JudgeBiases": _object(
        {
            "judge": STRING,
            "position_bias": _ref("Estimate"),
            "length_bias": _ref("Estimate"),
            "self_preference": _ref("Estimate"),
            "human_agreement": _ref("Estimate"),
            "error_bias": _ref("Estimate"),
            "n_verdicts": INTEGER,
        }
    ),
    "Envelope": _object(
        {
            "schema": STRING,
            "generated_at": TIME,
            "horizon": _ref("Horizon"),
            "window_s": INTEGER,
        }
    ),
    "Report": {
        "allOf": [
            _ref("Envelope"),
            _object(
                {
                    "schema": {"const": "prefleak.report/2"},
                    "ties": STRING,
                    "fdr": NUMBER,
                    "pls": _list(_ref("PLSRow")),
                    "leakage": _list(_ref("LeakageRow")),
                    "windows": _object(
                        {"pls": _list(_ref("PLSRow")), "leakage": _list(_ref("LeakageRow"))}
                    ),
                    "breakdowns": {"type": "object"},
                    "changes": _list(_ref("Change")),
                }
            ),
        ]
    },
    "PLSDocument": {
        "allOf": [
            _ref("Report"),
            _object(
                {
                    "biases": _list(_ref("JudgeBiases")),
                    "leaderboard": _null(_ref("LeaderboardRows")),
                }
            ),
        ]
    },
    "LeaderboardRows": _object(
        {
            "reference": _null(STRING),
            "rows": _list(
                _object(
                    {
                        "model": STRING,
                        "raw_win_rate": NUMBER,
                        "debiased_win_rate": NUMBER,
                        "raw_rank": INTEGER,
                        "debiased_rank": INTEGER,
                        "rank_change": INTEGER,
                        "comparisons": INTEGER,
                    }
                )
            ),
        }
    ),
    "Leaderboard": {
        "allOf": [
            _ref("Envelope"),
            _ref("LeaderboardRows"),
            _object({"schema": {"const": "prefleak.leaderboard/1"}}),
        ]
    },
    "Biases": {
        "allOf": [
            _ref("Envelope"),
            _object(
                {
                    "schema": {"const": "prefleak.biases/1"},
                    "judges": _list(_ref("JudgeBiases")),
                }
            ),
        ]
    },
    "Diversity": _object(
        {
            "schema": {"const": "prefleak.diversity/1"},
            "generated_at": TIME,
            "embeddings": _null(STRING),
            "notes": _list(STRING),
            "datasets": _list(
                _object(
                    {
                        "dataset": STRING,
                        "role": STRING,
                        "n_samples": INTEGER,
                        "metrics": {"type": "object", "additionalProperties": _ref("Estimate")},
                        "drift": _null({"type": "object"}),
                        "notes": _list(STRING),
                    }
                )
            ),
            "generations": _list(_list(STRING)),
            "coverage": _list(
                _object(
                    {
                        "eval": STRING,
                        "production": STRING,
                        "uncovered": _ref("Estimate"),
                        "clusters": _list({"type": "object"}),
                    }
                )
            ),
            "overlap": _list(
                _object(
                    {
                        "eval": STRING,
                        "training": STRING,
                        "overlapping": _ref("Estimate"),
                    }
                )
            ),
        }
    ),
    "Explain": {
        "allOf": [
            _ref("Envelope"),
            _object(
                {
                    "schema": {"const": "prefleak.explain/1"},
                    "subject": _object(
                        {
                            "kind": {"enum": ["judges", "judge", "candidate"]},
                            "names": _list(STRING),
                            "benchmark": _null(STRING),
                        }
                    ),
                    "verdict": _object({"status": STRING, "summary": STRING, "related": BOOLEAN}),
                    "rows": _list(_ref("PLSRow")),
                    "relations": _list(
                        _object(
                            {
                                "judge": STRING,
                                "candidate": STRING,
                                "kind": STRING,
                                "share": NUMBER,
                                "path": _list(STRING),
                                "in_rows": BOOLEAN,
                            }
                        )
                    ),
                    "timeline": _object(
                        {
                            "pls": _list(_object({"windows": _list(_object({"window": TIME}))})),
                            "leakage": {
                                "type": "object",
                                "additionalProperties": _list(_ref("LeakageRow")),
                            },
                        }
                    ),
                    "changes": _list(_ref("Change")),
                    "evidence": _object({"available": BOOLEAN, "rows": _list({"type": "object"})}),
                    "categories": {"type": "object"},
                    "biases": _list(_ref("JudgeBiases")),
                    "leakage": _list(_ref("LeakageRow")),
                    "recommendation": _object({"actions": _list(STRING)}),
                }
            ),
        ]
    },
    "CheckRequest": _object(
        {
            "judges": {**_list(STRING), "minItems": 1},
            "candidates": {**_list(STRING), "minItems": 1},
        },
        {"min_severity": {"enum": ["low", "medium", "high"]}},
    ),
    "Check": _object(
        {
            "schema": {"const": "prefleak.check/1"},
            "min_severity": STRING,
            "blocking": BOOLEAN,
            "judges": _list(STRING),
            "candidates": _list(STRING),
            "relations": _list(
                _object(
                    {
                        "judge": STRING,
                        "candidate": STRING,
                        "kind": STRING,
                        "share": NUMBER,
                        "path": _list(STRING),
                        "severity": STRING,
                        "blocking": BOOLEAN,
                    }
                )
            ),
            "unknown": _object({"judges": _list(STRING), "candidates": _list(STRING)}),
            "warnings": _list(STRING),
        }
    ),
    "Ingested": _object(
        {
            "accepted": INTEGER,
            "duplicate": INTEGER,
            "rejected": INTEGER,
            "errors": _list(_object({"location": STRING, "error": STRING})),
        },
        {"errors_omitted": INTEGER},
    ),
    "Status": _object(
        {
            "schema": {"const": "prefleak.status/1"},
            "version": STRING,
            "started_at": TIME,
            "uptime_s": NUMBER,
            "ready": BOOLEAN,
            "not_ready": _list(STRING),
            "sources": {"type": "object", "additionalProperties": BOOLEAN},
            "ingested": {"type": "object"},
            "last_ingest": _null(TIME),
            "store": _null({"type": "object"}),
            "recompute": _null({"type": "object"}),
        }
    ),
}
"""Named schemas of the answers (``components.schemas``)."""


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(media_type: str, description: str) -> Schema:
    return {"description": description, "content": {media_type: {"schema": STRING}}}


_ERROR = _ref("Error")
_UNAUTHORIZED = _json(_ERROR, "no or wrong bearer token (POST; GET with http.protect_reads)")
_NOT_YET = _json(_ERROR, "the first recompute is not done yet")
_BODY_ERRORS = {
    "401": _UNAUTHORIZED,
    "411": _json(_ERROR, "no Content-Length (chunked bodies are not taken)"),
    "413": _json(_ERROR, "body larger than http.max_body_bytes"),
}
_READ: list[dict[str, list[str]]] = [{}, {"bearer": []}]
"""Reads need the token only with ``http.protect_reads``."""


def _get(summary: str, ok: Schema, tag: str, **responses: Schema) -> Schema:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "security": _READ,
            "responses": {"200": ok, "401": _UNAUTHORIZED, **responses},
        }
    }


def _open(summary: str, responses: dict[str, Schema], tag: str = "operations") -> Schema:
    return {"get": {"summary": summary, "tags": [tag], "security": [{}], "responses": responses}}


def _snapshot(
    summary: str, schema: str, missing: str = "the first recompute is not done yet"
) -> Schema:
    return _get(
        summary, _json(_ref(schema), summary), "statistics", **{"503": _json(_ERROR, missing)}
    )


_SUBJECT = [
    {
        "name": "judges",
        "in": "query",
        "required": False,
        "schema": {"type": "array", "items": STRING, "minItems": 1, "maxItems": 2},
        "style": "form",
        "explode": True,
        "description": "a judge pair, as I,J; or the parameter twice, I then J, when a name has"
        " a comma",
    }
] + [
    {"name": name, "in": "query", "required": False, "schema": STRING, "description": text}
    for name, text in (
        ("judge", "one judge"),
        ("candidate", "one candidate (student)"),
        ("benchmark", "only this benchmark"),
    )
]
"""Give exactly one of judges, judge and candidate (400 otherwise)."""


def _paths() -> dict[str, Schema]:
    explain = _get(
        "Why a judge pair, a judge or a candidate shows leakage (prefleak explain --json)",
        _json(_ref("Explain"), "the explanation, from the last recompute"),
        "statistics",
        **{"400": _json(_ERROR, "not exactly one subject"), "503": _NOT_YET},
    )
    explain["get"]["parameters"] = _SUBJECT
    explain_page = _get(
        "The explain page of one subject",
        _text("text/html", "the page"),
        "web",
        **{
            "400": _text("text/html", "not exactly one subject"),
            "503": _text("text/html", "the first recompute is not done yet"),
        },
    )
    explain_page["get"]["parameters"] = _SUBJECT
    return {
        "/metrics": _open(
            "Prometheus metrics (docs/metrics.md)", {"200": _text("text/plain", "the exposition")}
        ),
        "/healthz": _open("Liveness", {"200": _json(_object({"alive": BOOLEAN}), "alive")}),
        "/readyz": _open(
            "Readiness",
            {
                code: _json(_object({"ready": BOOLEAN, "reasons": _list(STRING)}), text)
                for code, text in (("200", "ready"), ("503", "not ready, with the reasons"))
            },
        ),
        "/openapi.json": _open("This document", {"200": _json({"type": "object"}, "OpenAPI")}),
        "/v1/status": _get(
            "What the service holds and does (prefleak status)",
            _json(_ref("Status"), "the status"),
            "operations",
        ),
        "/v1/pls": _snapshot(
            "The whole last analysis: report, biases and leaderboard", "PLSDocument"
        ),
        "/v1/report": _snapshot("PLS, leakage and changes (prefleak report --json)", "Report"),
        "/v1/leaderboard": _snapshot(
            "Raw and debiased leaderboard (prefleak leaderboard --json)", "Leaderboard"
        ),
        "/v1/biases": _snapshot("Judge habits (prefleak biases --json)", "Biases"),
        "/v1/diversity": _snapshot(
            "Diversity, drift and coverage (prefleak diversity --json)",
            "Diversity",
            "no diversity report yet",
        ),
        "/v1/explain": explain,
        "/v1/events": {
            "post": {
                "summary": "Ingest events: one JSON event, a JSON array, or JSON lines "
                "(Content-Type application/x-ndjson); docs/events.md",
                "tags": ["intake"],
                "security": [{"bearer": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {}},
                        "application/x-ndjson": {"schema": STRING},
                    },
                },
                "responses": {
                    "200": _json(
                        _ref("Ingested"), "what was stored and what was rejected, and why"
                    ),
                    "400": _json({"anyOf": [_ref("Ingested"), _ERROR]}, "the body is not JSON"),
                    "503": _json(
                        _ERROR,
                        "the store cannot write (an I/O error, a lock): nothing "
                        "of the body is stored, re-send it after Retry-After",
                    ),
                    "507": _json(
                        _ERROR,
                        "the disk holding the store is full: nothing of the body is "
                        "stored, re-send it after Retry-After once space is freed",
                    ),
                    **_BODY_ERRORS,
                },
            }
        },
        "/v1/check": {
            "post": {
                "summary": "Gate an evaluation: related judge and candidate pairs (prefleak check "
                "--json)",
                "tags": ["intake"],
                "security": [{"bearer": []}, {}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CheckRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Check"), "the relations found"),
                    "400": _json(_ERROR, "the body is not a check request"),
                    **_BODY_ERRORS,
                },
            }
        },
        "/": _get(
            "The overview page",
            _text("text/html", "the page"),
            "web",
            **{"503": _text("text/html", "the first recompute is not done yet")},
        ),
        "/explain": explain_page,
        **{
            path: _open(
                f"Static file of the web view ({media_type})",
                {
                    "200": _text(media_type, "the file (Cache-Control, ETag)"),
                    "304": {"description": "not modified (If-None-Match)"},
                },
                "web",
            )
            for path, media_type in (
                (path, asset.content_type.split(";")[0]) for path, asset in ASSETS.items()
            )
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (the same object every call: treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prefleak",
            "version": __version__,
            "description": "Preference leakage monitoring: event intake, statistics of the last "
            "recompute, the read-only web view and operations (docs/api.md).",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "http.auth_token_file or http.auth_token; needed by every "
                    "POST, and by every GET but probes, metrics, this document and static "
                    "files with http.protect_reads (docs/reliability.md)",
                }
            },
        },
    }
