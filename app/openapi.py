"""flask-openapi3, with the OpenAPI document written when it is first read rather than as routes are declared.

flask-openapi3 4.3 turns every route's request and response models into JSON
Schema the moment the route is declared: for this API, most of create_app's
time, paid by every Lambda cold start although almost no request reads the
document. Blueprints made here remember their routes and write them into the
document on its first read (GET /openapi/openapi.json, `flask openapi`).
Requests are validated exactly as before: validation never used the document.

The one module that relies on flask-openapi3's private `_collect_openapi_info`
hook; tests/unit/test_openapi.py pins that the document comes out the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import flask_openapi3
from flask_openapi3.types import ParametersTuple
from flask_openapi3.utils import parse_parameters


class APIBlueprint(flask_openapi3.APIBlueprint):
    """An APIBlueprint whose routes enter its `paths`, `tags` and `components_schemas` only on `document()`."""

    def __init__(self, name: str, import_name: str, **options: Any) -> None:
        super().__init__(name, import_name, **options)
        self._undocumented: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
        self._documenting = threading.Lock()

    def _collect_openapi_info(self, rule: str, func: Callable[..., Any], **options: Any) -> ParametersTuple:
        self._undocumented.append((rule, func, options))
        return parse_parameters(func, doc_ui=False)  # the request models validation needs, no JSON Schema

    def document(self) -> None:
        """Write the routes declared so far into the blueprint's part of the document (each once)."""
        with self._documenting:
            while self._undocumented:
                rule, func, options = self._undocumented.pop(0)
                super()._collect_openapi_info(rule, func, **options)


class OpenAPI(flask_openapi3.OpenAPI):
    """An OpenAPI app that documents the blueprints registered with `register_api` when the document is generated."""

    def __init__(self, import_name: str, **options: Any) -> None:
        super().__init__(import_name, **options)
        self._documented_later: list[APIBlueprint] = []
        self._documenting = threading.Lock()

    def register_api(self, api: flask_openapi3.APIBlueprint, **options: Any) -> None:
        super().register_api(api, **options)
        if isinstance(api, APIBlueprint):
            self._documented_later.append(api)

    def generate_spec_json(self) -> None:
        with self._documenting:
            for api in self._documented_later:
                api.document()
                # what flask-openapi3's register_api merges, again now that there is something to merge
                for tag in api.tags:
                    if tag.name not in self.tag_names:
                        self.tags.append(tag)
                        self.tag_names.append(tag.name)
                self.paths.update(api.paths)
                self.components_schemas.update(api.components_schemas)
            super().generate_spec_json()
