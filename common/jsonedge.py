"""The one name for untyped JSON: an object as it is parsed, signed or generated, before any model reads it.

A module uses :data:`JsonObject` only where the exact JSON is the thing handled: the canonical
JSON a signature covers, the raw object a parser checks before a model validates it, a pydantic
serializer's output, a generated JSON Schema. Everything else crosses module boundaries as a
typed model (a frozen pydantic model, a ``TypedDict`` or a dataclass). docs/architecture.md
("Where untyped JSON is allowed") lists the modules, and tests/unit/test_architecture.py keeps
the alias, and ``dict[str, Any]``, out of every other module of ``agent`` and ``fleet.campaign``.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]  # a JSON object whose shape no model fixes here: the JSON edge
