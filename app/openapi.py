"""Routes declared and validated as flask-openapi3 declares and validates them; flask-openapi3 itself imported
only when the OpenAPI document or the Swagger UI is first asked for.

A route is declared as with flask-openapi3 (`@api.post(rule, tags=[...], responses=..., security=...)`), its
view's `path`, `query`, `header` and `body` parameters annotated with pydantic models. `APIBlueprint` records
the declaration and registers a view that validates the request as flask-openapi3 4.3 does
(flask_openapi3/request.py: which request part fills which model, aliases, repeated query keys for lists,
extra keys kept), so a request is answered the same.

flask-openapi3's import (some 60 pydantic models of the OpenAPI objects, its plugins looked up through
importlib.metadata) was a quarter of a Lambda cold start, although almost no request reads the document.
So on the first request under /openapi/, `Documentation` makes a flask-openapi3 app of its own, declares
every recorded route on it again, and lets it answer: the document is flask-openapi3's own, and its Swagger
UI is served offline as before. `flask openapi` exports the document as before. A route's `responses` may name
a model by a string instead, one of the app's `named_models` module: that module
(the success answers, which only the document needs) is imported with it.

The one module that imports flask-openapi3; tests/unit/test_openapi.py pins that the document and the
validation answers are flask-openapi3's.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, wraps
from typing import TYPE_CHECKING, Any, get_type_hints

import click
from flask import Blueprint, Flask, Response, current_app, request
from flask.cli import with_appcontext
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import NotFound

from core.registry import built

if TYPE_CHECKING:
    import flask_openapi3

DOC_PREFIX = "/openapi"
"""Where flask-openapi3 serves the document (DOC_PREFIX/openapi.json) and its UIs (DOC_PREFIX/swagger)."""
PARTS = ("header", "cookie", "path", "query", "form", "body", "raw")
"""The view parameters flask-openapi3 fills from the request, by name."""


@dataclass(frozen=True)
class Tag:
    """An OpenAPI tag (flask_openapi3.Tag when the document is written)."""

    name: str
    description: str | None = None


@dataclass(frozen=True)
class Info:
    """The document's info object (flask_openapi3.Info when the document is written)."""

    title: str
    version: str
    description: str | None = None


@dataclass(frozen=True)
class Route:
    """One declared route: what flask-openapi3 is told when the document is written."""

    method: str
    rule: str
    func: Callable[..., Any]
    options: dict[str, Any]


@dataclass(frozen=True)
class _Field:
    """How flask-openapi3 reads one field of a header, query or form model from the request."""

    keys: tuple[str, ...]
    """The request names tried in turn (the alias, then the field name when populate_by_name)."""
    key: str
    """The name the value is validated under."""
    many: bool
    """A list (or optional list): every value of a repeated query key."""
    null: bool
    """Typed null: validated as given even when absent."""


@cache
def _fields(model: type[BaseModel], header: bool) -> tuple[_Field, ...]:
    """A model's fields as flask-openapi3 reads them, worked out once per model (it did so on every request)."""
    properties = model.model_json_schema().get("properties", {})
    by_name = bool(model.model_config.get("populate_by_name"))
    found = []
    for name, info in model.model_fields.items():
        schema = properties.get(info.alias or name) or {}
        many = schema.get("type") == "array" or any(m.get("type") == "array" for m in schema.get("anyOf", []))
        if header:  # flask-openapi3 looks headers up Title-Cased, '_' as '-'
            titled = name.replace("_", "-").title()
            keys: tuple[str, ...] = (info.alias.replace("_", "-").title(),) if info.alias else (titled,)
            if info.alias and by_name:
                keys += (titled,)
            many = False
        else:
            keys = (info.alias,) if info.alias else (name,)
            if info.alias and by_name:
                keys += (name,)
        found.append(_Field(keys, info.alias or name, many, schema.get("type") == "null"))
    return tuple(found)


def _read(source: Any, spec: _Field) -> Any:
    """flask-openapi3's `_get_value` / `_get_list_value` (the first non-empty of the names tried)."""
    value: Any = None
    for key in spec.keys:
        value = source.getlist(key) if spec.many else source.get(key)
        if value:
            return value
    return value


def _collect(model: type[BaseModel], source: Any, *, header: bool = False) -> dict[str, Any]:
    """The dict flask-openapi3 validates a header or query model against: its fields, then every other key."""
    values: dict[str, Any] = {}
    for spec in _fields(model, header):
        value = _read(source, spec)
        if value is not None and value != []:
            values[spec.key] = value
        if spec.null:
            values[spec.key] = value
    for key, value in source.items():
        if key not in values:
            values[key] = value
    return values


def validated(models: dict[str, Any], path_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the view's keyword arguments, each part validated as flask-openapi3 validates it.

    Raises ValidationError. (Forms and cookies are not used by this API and are refused when declared.)
    """
    kwargs: dict[str, Any] = {}
    if "header" in models:
        headers = dict(request.headers)  # one value per name, as flask-openapi3 reads them
        header = built(models["header"])
        kwargs["header"] = header.model_validate(_collect(header, headers, header=True))
    if "path" in models:
        kwargs["path"] = built(models["path"]).model_validate(path_kwargs)
    if "query" in models:
        query = built(models["query"])
        kwargs["query"] = query.model_validate(_collect(query, request.args))
    if "body" in models:
        obj = request.get_json(silent=True)
        body = built(models["body"])
        kwargs["body"] = body.model_validate_json(obj) if isinstance(obj, str) else body.model_validate(obj)
    if "raw" in models:
        kwargs["raw"] = request
    return kwargs


def request_models(func: Callable[..., Any]) -> dict[str, Any]:
    """Return the models `func` takes by parameter name (flask-openapi3's `parse_parameters`, read once)."""
    hints = get_type_hints(func)
    models = {part: hints[part] for part in PARTS if part in hints}
    unsupported = {"form", "cookie"} & set(models)
    if unsupported:
        raise TypeError(f"{func.__name__}: {sorted(unsupported)} parameters are not supported by app.openapi")
    return models


class APIBlueprint(Blueprint):
    """A Blueprint whose `get`/`post`/`put`/`patch`/`delete` take flask-openapi3's arguments and validate its way."""

    def __init__(self, name: str, import_name: str, **options: Any) -> None:
        super().__init__(name, import_name, **options)
        self.options = options
        self.routes: list[Route] = []

    def _declare(self, method: str, rule: str, options: dict[str, Any]) -> Callable[[Callable[..., Any]], Any]:
        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            models = request_models(func)

            @wraps(func)
            def view(**path_kwargs: Any) -> Any:
                try:
                    kwargs = validated(models, path_kwargs)
                except ValidationError as exc:
                    return current_app.validation_error_callback(exc)  # type: ignore[attr-defined]
                return func(**kwargs)  # path values no model took are dropped, as flask-openapi3 drops them

            self.add_url_rule(rule, view_func=view, methods=[method])
            self.routes.append(Route(method.lower(), rule, func, options))
            return func

        return decorator

    def get(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        return self._declare("GET", rule, options)

    def post(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        return self._declare("POST", rule, options)

    def put(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        return self._declare("PUT", rule, options)

    def patch(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        return self._declare("PATCH", rule, options)

    def delete(self, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        return self._declare("DELETE", rule, options)


class OpenAPI(Flask):
    """A Flask app taking flask-openapi3's OpenAPI arguments; its document is written by `Documentation`."""

    def __init__(
        self,
        import_name: str,
        *,
        info: Info,
        validation_error_callback: Callable[[ValidationError], Any],
        named_models: str | None = None,
        **document_options: Any,
    ) -> None:
        super().__init__(import_name)
        self.info = info
        self.validation_error_callback = validation_error_callback
        self.named_models = named_models
        """The module a route's `responses` may name models of (as strings): imported when the document is written."""
        self.documentation = Documentation(self, document_options)
        self.add_url_rule(f"{DOC_PREFIX}/", "openapi", self.documentation.serve)
        self.add_url_rule(f"{DOC_PREFIX}/<path:subpath>", "openapi_files", self.documentation.serve)
        self.cli.add_command(_openapi_command)

    def register_api(self, api: APIBlueprint, **options: Any) -> None:
        """Register `api` (documented when the document is first asked for)."""
        self.register_blueprint(api, **options)
        self.documentation.blueprints.append(api)


class Documentation:
    """flask-openapi3's app for this app's routes: made on first use; writes the document and serves the UIs."""

    def __init__(self, app: OpenAPI, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        self.blueprints: list[APIBlueprint] = []
        self._made: flask_openapi3.OpenAPI | None = None
        self._making = threading.Lock()

    def made(self) -> flask_openapi3.OpenAPI:
        """Return the flask-openapi3 app declaring every route of the blueprints registered so far."""
        with self._making:
            if self._made is None:
                self._made = self._make()
            return self._made

    def _make(self) -> flask_openapi3.OpenAPI:
        import flask_openapi3

        info = flask_openapi3.Info(**{k: v for k, v in vars(self.app.info).items() if v is not None})
        doc = flask_openapi3.OpenAPI(
            self.app.import_name,
            info=info,
            validation_error_callback=self.app.validation_error_callback,
            doc_prefix=DOC_PREFIX,
            **self.options,
        )
        doc.json.sort_keys = self.app.json.sort_keys  # type: ignore[attr-defined]
        for blueprint in self.blueprints:
            declared = flask_openapi3.APIBlueprint(blueprint.name, blueprint.import_name, **blueprint.options)
            for route in blueprint.routes:
                options = dict(route.options)
                if "tags" in options:
                    options["tags"] = [flask_openapi3.Tag(**vars(tag)) for tag in options["tags"]]
                if "responses" in options:
                    options["responses"] = {code: self._model(model) for code, model in options["responses"].items()}
                getattr(declared, route.method)(route.rule, **options)(route.func)
            doc.register_api(declared)
        return doc

    def _model(self, answer: Any) -> Any:
        """Return the model a `responses` entry names (a string names one in the app's `named_models` module)."""
        if not isinstance(answer, str):
            return answer
        if self.app.named_models is None:
            raise TypeError(f"responses name the model {answer!r}, but the app has no named_models module")
        return getattr(importlib.import_module(self.app.named_models), answer)

    def serve(self, subpath: str = "") -> Response:
        """Answer a request under /openapi/ as flask-openapi3 answers it (its 404 is the API's)."""
        doc = self.made()
        with doc.request_context(request.environ):
            response = doc.full_dispatch_request()
        if response.status_code == 404:
            raise NotFound()
        return response


@click.command("openapi")
@click.option("--output", "-o", type=click.Path(), help="The output file path.")
@click.option("--format", "-f", "_format", type=click.Choice(["json", "yaml"]), help="The output file format.")
@click.option("--indent", "-i", type=int, help="The indentation for JSON dumps.")
@with_appcontext
def _openapi_command(output: str | None, _format: str | None, indent: int | None) -> None:
    """Export the OpenAPI Specification to console or a file (flask-openapi3's `flask openapi`)."""
    from flask_openapi3.commands import openapi_command

    doc = current_app.documentation.made()  # type: ignore[attr-defined]
    with doc.app_context():
        openapi_command.callback.__wrapped__(output, _format, indent)  # type: ignore[union-attr]
