"""The ARI 22 route table (derived from the Swagger spec) and request validation against it.

The table is derived from the Swagger documents a running Asterisk serves under
``/ari/api-docs/`` (the recorder, ``callback_ari.sim.recorder``, fetches them from the sandbox
PBX); the package ships only the derived table, ``ari22_routes.json``, never Asterisk's own
documents. ``python -m callback_ari.sim.simpbx.spec --generate DIR`` prints the table derived
from resource files saved in DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

ROUTES_FILE = "ari22_routes.json"

# Messages real Asterisk 22 gives when a required parameter is missing (res/ari/resource_*.c);
# for other parameters the fake answers in the same style.
_MISSING_MESSAGES: Mapping[tuple[str, str], str] = {
    ("originate", "endpoint"): "Endpoint must be specified",
    ("originateWithId", "endpoint"): "Endpoint must be specified",
    ("create", "endpoint"): "Endpoint must be specified",
    ("getChannelVar", "variable"): "Variable name is required",
    ("setChannelVar", "variable"): "Variable name is required",
    ("getGlobalVar", "variable"): "Variable name is required",
    ("setGlobalVar", "variable"): "Variable name is required",
    ("sendDTMF", "dtmf"): "DTMF is required",
    ("subscribe", "eventSource"): "Missing parameter eventSource",
    ("unsubscribe", "eventSource"): "Missing parameter eventSource",
    ("eventWebsocket", "app"): "Missing parameter app",
}
# (reason phrase, message) for a value outside allowableValues, where Asterisk has one.
_ENUM_MESSAGES: Mapping[tuple[str, str], tuple[str, str]] = {
    ("hangup", "reason"): ("Invalid Reason", "Invalid reason for hangup reason provided"),
}


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an operation."""

    name: str
    location: str  # "path" | "query" | "body"
    required: bool
    data_type: str
    allowed: tuple[str, ...] | None
    multiple: bool


@dataclass(frozen=True, slots=True)
class Operation:
    """One HTTP method on one path."""

    method: str
    nickname: str
    params: tuple[Param, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """A path template such as ``/channels/{channelId}/play`` and its operations."""

    template: str
    segments: tuple[str, ...]
    operations: Mapping[str, Operation]


@dataclass(frozen=True, slots=True)
class Match:
    """A request matched to an operation, with its path variables."""

    route: Route
    operation: Operation
    path_vars: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SpecError:
    """Why a request does not fit the spec: HTTP status, reason phrase and message."""

    status: int
    reason: str
    message: str
    allow: tuple[str, ...] = ()


def resource_names(listing: Mapping[str, Any]) -> list[str]:
    """File names (``channels.json``, ...) of the resources a ``resources.json`` lists."""
    return [api["path"].rsplit("/", 1)[-1].replace(".{format}", ".json") for api in listing["apis"]]


def read_docs(spec_dir: Path) -> dict[str, Any]:
    """``resources.json`` and every resource document it lists, read from ``spec_dir``."""
    listing = json.loads((spec_dir / "resources.json").read_text())
    docs: dict[str, Any] = {"resources.json": listing}
    for name in resource_names(listing):
        docs[name] = json.loads((spec_dir / name).read_text())
    return docs


def generate(spec_dir: Path) -> dict[str, Any]:
    """Derive the route table from the Swagger resource files saved in ``spec_dir``."""
    return generate_from(read_docs(spec_dir))


def generate_from(docs: Mapping[str, Any]) -> dict[str, Any]:
    """Derive the route table (paths, methods, parameters) from parsed Swagger documents."""
    listing = docs["resources.json"]
    routes: list[dict[str, Any]] = []
    for name in resource_names(listing):
        resource = docs[name]
        for entry in resource["apis"]:
            ops: dict[str, Any] = {}
            for op in entry["operations"]:
                params = []
                for p in op.get("parameters", []):
                    allowed = p.get("allowableValues")
                    values = allowed.get("values") if isinstance(allowed, dict) else None
                    params.append(
                        {
                            "name": p["name"],
                            "in": p["paramType"],
                            "required": bool(p.get("required", False)),
                            "dataType": p.get("dataType", "string"),
                            "allowedValues": values,
                            "allowMultiple": bool(p.get("allowMultiple", False)),
                        }
                    )
                ops[op["httpMethod"]] = {"nickname": op["nickname"], "params": params}
            routes.append({"path": entry["path"], "operations": ops})
    return {"apiVersion": listing["apiVersion"], "routes": routes}


def extract_models(docs: Mapping[str, Any]) -> dict[str, Any]:
    """The data models (names, property types, required flags, event subtypes), nothing else."""
    models: dict[str, Any] = {}
    for name in resource_names(docs["resources.json"]):
        for model_name, model in docs[name].get("models", {}).items():
            entry: dict[str, Any] = {}
            if "subTypes" in model:
                entry["subTypes"] = list(model["subTypes"])
            entry["properties"] = {
                prop: {"type": spec.get("type"), "required": bool(spec.get("required", False))}
                for prop, spec in model.get("properties", {}).items()
            }
            models[model_name] = entry
    return {"apiVersion": docs["resources.json"]["apiVersion"], "models": models}


def _route_from(obj: Mapping[str, Any]) -> Route:
    ops: dict[str, Operation] = {}
    for method, op in obj["operations"].items():
        params = tuple(
            Param(
                name=p["name"],
                location=p["in"],
                required=p["required"],
                data_type=p["dataType"],
                allowed=tuple(p["allowedValues"]) if p["allowedValues"] else None,
                multiple=p["allowMultiple"],
            )
            for p in op["params"]
        )
        ops[method] = Operation(method=method, nickname=op["nickname"], params=params)
    template = obj["path"]
    return Route(template=template, segments=tuple(template.strip("/").split("/")), operations=ops)


class RouteTable:
    """Matches ``/ari/...`` requests to ARI operations and validates their parameters."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.api_version: str = table["apiVersion"]
        self.routes = tuple(_route_from(r) for r in table["routes"])

    @classmethod
    def load(cls) -> RouteTable:
        """The table shipped with the package."""
        text = resources.files("callback_ari.sim.simpbx").joinpath(ROUTES_FILE).read_text()
        return cls(json.loads(text))

    def _find(self, path: str) -> tuple[Route, dict[str, str]] | None:
        # res_ari splits the raw path on "/" first, then decodes each segment: a sound id
        # "digits/1" sent as digits%2F1 is one segment.
        parts = tuple(unquote(p) for p in path.strip("/").split("/"))
        best: tuple[int, Route, dict[str, str]] | None = None
        for route in self.routes:
            if len(route.segments) != len(parts):
                continue
            path_vars: dict[str, str] = {}
            literal = 0
            for seg, part in zip(route.segments, parts, strict=True):
                if seg.startswith("{"):
                    if not part:
                        break
                    path_vars[seg[1:-1]] = part
                elif seg == part:
                    literal += 1
                else:
                    break
            else:
                if best is None or literal > best[0]:
                    best = (literal, route, path_vars)
        return None if best is None else (best[1], best[2])

    def match(self, method: str, path: str) -> Match | SpecError:
        """Route ``path`` (without the ``/ari`` prefix) like res_ari does."""
        if path.endswith("/") and path != "/":
            return SpecError(
                404, "Not Found", f"ARI URLs do not end with a slash. Try /ari{path[:-1]}"
            )
        found = self._find(path)
        if found is None:
            return SpecError(404, "Not Found", "Resource not found")
        route, path_vars = found
        op = route.operations.get(method)
        if op is None:
            allow = tuple(sorted(route.operations))
            return SpecError(405, "Method Not Allowed", "Invalid method", allow)
        return Match(route=route, operation=op, path_vars=path_vars)

    @staticmethod
    def validate(op: Operation, params: Mapping[str, object]) -> SpecError | None:
        """Required parameters present and enum values allowed; None when the request fits."""
        for p in op.params:
            if p.location == "path":
                continue
            value = params.get(p.name)
            if value is None or value == "":
                if p.required:
                    message = _MISSING_MESSAGES.get(
                        (op.nickname, p.name), f"Missing parameter {p.name}"
                    )
                    return SpecError(400, "Bad Request", message)
                continue
            if p.allowed is not None and isinstance(value, str):
                values = value.split(",") if p.multiple else [value]
                for v in values:
                    if v not in p.allowed:
                        reason, message = _ENUM_MESSAGES.get(
                            (op.nickname, p.name),
                            ("Bad Request", f"Invalid value for {p.name}: {v}"),
                        )
                        return SpecError(400, reason, message)
        return None


def main(argv: list[str] | None = None) -> int:
    """CLI: ``--generate DIR`` prints the derived route table as JSON."""
    parser = argparse.ArgumentParser(prog="python -m callback_ari.sim.simpbx.spec")
    parser.add_argument("--generate", metavar="DIR", required=True, type=Path)
    args = parser.parse_args(argv)
    json.dump(generate(args.generate), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
