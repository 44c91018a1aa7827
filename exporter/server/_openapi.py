"""OpenAPI documentation of the model server's request bodies and answers.

The handlers read and check the raw JSON themselves, so that every mistake is answered with the
field and the reason and never with a framework error; FastAPI therefore cannot derive the bodies
from a signature. They are described here instead, from the loaded config and reference profile,
for ``/docs`` and for schema-based fuzzing (``tests/test_fuzz.py``). Each rule below mirrors a
check in ``_body`` or ``_checks``; a body the schema allows is never refused for its shape. The
types a watched feature's value may have are not written here but asked of :mod:`exporter.coerce`,
whose verdicts the service's checks and the monitor both use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from exporter import coerce
from exporter.outcomes import Resolution

JsonSchema = dict[str, Any]

#: Largest finite double: JSON numbers beyond it cannot reach a model as a number.
LARGEST_DOUBLE = 1.7976931348623157e308
#: Longest ``prediction_id`` /feedback takes (``check_outcome`` in ``_checks``).
MAX_PREDICTION_ID_LENGTH = 256
#: Longest ``X-Routing-Key`` /predict takes, in characters (a session or user id, not a
#: document); checked in ``_app``.
MAX_ROUTING_KEY_LENGTH = 256
#: An integer past 1.7976931348623157e308 as written (not the double's exact value, about 8e291
#: more) is refused as out of range, as the schema says (exporter.coerce).
_FINITE_NUMBER: JsonSchema = {
    "type": "number",
    "minimum": -LARGEST_DOUBLE,
    "maximum": LARGEST_DOUBLE,
}

#: A value of each JSON type, as the service's parser hands it to the checks.
_JSON_EXAMPLES: dict[str, Any] = {
    "string": "text",
    "number": 0.5,
    "boolean": True,
    "null": None,
    "array": [],
    "object": {},
}


def json_types(judge: Callable[[Any], object]) -> list[str]:
    """The JSON types a watched value may have: those the library does not judge ``wrong_type``
    (:mod:`exporter.coerce`), which are exactly those the service does not refuse with 422."""
    return [kind for kind, example in _JSON_EXAMPLES.items() if judge(example) != coerce.WRONG_TYPE]


_FIELD_ERRORS: JsonSchema = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        }
    },
}
_MODEL_FAILED: JsonSchema = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}
_ANSWER: JsonSchema = {
    "type": "object",
    "required": ["prediction", "confidence", "prediction_id", "model", "version"],
    "properties": {
        "prediction": {"description": "The model's output as JSON (NaN and infinity as null)."},
        "confidence": {"type": ["number", "null"]},
        "prediction_id": {"type": "string", "description": "Send it back with /feedback."},
        "model": {"type": "string"},
        "version": {
            "type": "string",
            "description": "The version that answered: the primary or a canary (docs/versions.md).",
        },
    },
}
_OUTCOME_STATUS: JsonSchema = {
    "type": "object",
    "required": ["prediction_id", "status"],
    "properties": {
        "prediction_id": {"type": "string"},
        "status": {"enum": [r.value for r in Resolution]},
    },
}


def _json(description: str, schema: JsonSchema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {code: _json(description, _FIELD_ERRORS) for code, description in codes}


#: JSON types other than string and null, which any feature the model reads may have.
_ANY_BUT_STRING = ["number", "boolean", "array", "object"]


def _without_null(schema: JsonSchema) -> JsonSchema:
    """``schema`` with null taken out of its ``type``, for a value that must be there."""
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    return schema


@dataclass(frozen=True)
class ServiceDocs:
    """What the request checks of one service depend on: task, limits and watched features."""

    task: str
    max_batch: int
    numeric: Iterable[str]
    categorical: Iterable[str]
    max_key_length: int
    max_string_length: int
    #: ``model.required_features``: present and not null in every instance.
    required: Sequence[str] = ()

    def features(self) -> JsonSchema:
        """One instance: watched features are type-checked, any other is passed to the model;
        a required one must be there and not null."""
        text = {"type": "string", "maxLength": self.max_string_length}
        properties: dict[str, JsonSchema] = {}
        # A number past a double is refused for a numeric feature (it would count as inf).
        numeric = self._values(coerce.number, text, _FINITE_NUMBER)
        categorical = self._values(coerce.category, text, {"type": "number"})
        for name in sorted(self.numeric):
            properties[name] = {
                "anyOf": numeric,
                "description": "Numeric feature watched for drift; null counts as missing.",
            }
        for name in sorted(self.categorical):
            properties[name] = {
                "anyOf": categorical,
                "description": "Categorical feature watched for drift; null counts as missing.",
            }
        for name in self.required:
            schema = properties.get(name, {"anyOf": [text, {"type": _ANY_BUT_STRING}]})
            properties[name] = {
                "anyOf": [
                    _without_null(choice)
                    for choice in schema["anyOf"]
                    if choice.get("type") != "null"
                ],
                "description": "Required by the model (model.required_features); not null.",
            }
        return {
            "type": "object",
            "properties": properties,
            **({"required": sorted(self.required)} if self.required else {}),
            "propertyNames": {"maxLength": self.max_key_length},
            "additionalProperties": {"anyOf": [text, {"type": [*_ANY_BUT_STRING, "null"]}]},
        }

    @staticmethod
    def _values(
        judge: Callable[[Any], object], text: JsonSchema, number: JsonSchema
    ) -> list[JsonSchema]:
        """The schemas of a watched feature's values, by the types ``judge`` accepts."""
        kinds = json_types(judge)
        schemas = [text] if "string" in kinds else []
        if "number" in kinds:
            schemas.append(number)
        others = [kind for kind in kinds if kind not in ("string", "number")]
        if others:
            schemas.append({"type": others[0] if len(others) == 1 else others})
        return schemas

    def predict(self) -> dict[str, Any]:
        """Keyword arguments of the ``POST /predict`` route."""
        features = self.features()
        body: JsonSchema = {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["features"],
                    "additionalProperties": False,
                    "properties": {"features": features},
                },
                {
                    "type": "object",
                    "required": ["instances"],
                    "additionalProperties": False,
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": self.max_batch,
                            "items": features,
                        }
                    },
                },
            ]
        }
        batch = {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array", "items": _ANSWER}},
        }
        routing_key = {
            "name": "X-Routing-Key",
            "in": "header",
            "required": False,
            "description": "Sticky routing between the primary and its canaries: one key is "
            "always answered by the same version; without it, a random draw by their weights.",
            "schema": {"type": "string", "maxLength": MAX_ROUTING_KEY_LENGTH},
        }
        return {
            "openapi_extra": {
                "parameters": [routing_key],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
            },
            "responses": {
                200: _json(
                    "One answer, or one per instance in order.", {"anyOf": [_ANSWER, batch]}
                ),
                **_errors(
                    (400, "The body is not JSON, or it is nested too deeply."),
                    (413, f"The body or the batch (over {self.max_batch}) is too large."),
                    (
                        422,
                        "A field has the wrong type or is unknown, or X-Routing-Key is too "
                        "long; the answer names it.",
                    ),
                ),
                500: _json("The model raised; counted by exception class.", _MODEL_FAILED),
            },
        }

    def feedback(self) -> dict[str, Any]:
        """Keyword arguments of the ``POST /feedback`` route."""
        # A class may be any scalar (null is no outcome); a list item's actual is only checked
        # for being a scalar.
        scalar = {"type": [kind for kind in json_types(coerce.category) if kind != "null"]}
        actual = _FINITE_NUMBER if self.task == "regression" else scalar
        listed = {"type": "array", "maxItems": self.max_batch, "items": self._outcome(scalar)}
        results = {
            "type": "object",
            "required": ["results"],
            "properties": {"results": {"type": "array", "items": _OUTCOME_STATUS}},
        }
        return {
            "openapi_extra": {
                "requestBody": {
                    "required": True,
                    "description": "One outcome, or a list: each item of a list is answered "
                    "with its own status, an actual of the wrong type with 'invalid'.",
                    "content": {
                        "application/json": {"schema": {"anyOf": [self._outcome(actual), listed]}}
                    },
                }
            },
            "responses": {
                200: _json(
                    "Recorded (or the same value again); per item for a list.",
                    {"anyOf": [_OUTCOME_STATUS, results]},
                ),
                **_errors(
                    (400, "The body is not JSON, or it is nested too deeply."),
                    (404, "No pending prediction with this id (never made, or expired)."),
                    (409, "This prediction already has a different outcome."),
                    (413, f"The body or the list (over {self.max_batch}) is too large."),
                    (422, "A field is missing, unknown or of the wrong type."),
                    (503, "The outcome store is unavailable; retry later."),
                ),
            },
        }

    def _outcome(self, actual: JsonSchema) -> JsonSchema:
        return {
            "type": "object",
            "required": ["prediction_id", "actual"],
            "additionalProperties": False,
            "properties": {
                "prediction_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_PREDICTION_ID_LENGTH,
                },
                "actual": actual,
            },
        }


#: Keyword arguments of ``GET /readyz``.
READYZ: dict[str, Any] = {
    "responses": {
        503: _json(
            "The outcome store cannot be written, or its last write failed.",
            {
                "type": "object",
                "required": ["status", "reason"],
                "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
            },
        )
    }
}
#: Keyword arguments of ``GET /metrics``: Prometheus text, not JSON.
METRICS: dict[str, Any] = {
    "responses": {
        200: {
            "description": "The Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }
}

__all__ = ["LARGEST_DOUBLE", "METRICS", "READYZ", "ServiceDocs", "json_types"]
