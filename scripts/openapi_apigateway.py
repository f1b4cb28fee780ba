#!/usr/bin/env python3
"""Writes the API Gateway import of `api/openapi.yaml`: the same API as an OpenAPI 3.0 document
(HTTP API imports 3.0 only) with each route's Lambda integration and the JWT authorizer, ready
for `aws apigatewayv2 import-api --body file://OUT` (or `reimport-api --api-id ...`).

    python3 scripts/openapi_apigateway.py --region eu-west-1 --account 123456789012 \\
        --issuer https://cognito-idp.eu-west-1.amazonaws.com/POOL --audience CLIENT_ID \\
        [--admin-scope salesloop/admin] [--prefix STACK-] [--out build/openapi-apigateway.json]

Each operation's integration is `aws_proxy`, payload format 2.0, to the function that serves it
(process_message, end_conversation, read_api or admin_api, the template's
ProcessMessageFunction, EndConversationFunction, ReadApiFunction and AdminApiFunction;
`--prefix` names deployed functions `PREFIX + name`). Every route but `GET /dashboard` requires
the authorizer; the admin routes (`ADMIN_ROUTES`, tagged `admin` in the spec) require it with
the admin scope too (`--admin-scope`: the stack's `AdminScope`, the admin function's
`ADMIN_SCOPE`, default `salesloop/admin`; a token without it is API Gateway's own 403). Importing creates routes and
integrations only: the functions must exist and API Gateway must be allowed to invoke them
(`aws lambda add-permission`), which the SAM template does by itself.

The 3.1 features the spec uses become their 3.0 forms: a type list with "null" becomes the
type with `nullable: true`, `const` an `enum` of one, `prefixItems` pairs `items` with two
items exactly, numeric `exclusiveMinimum` the 3.0 boolean form, schema `examples` one `example`.
Needs PyYAML (scripts/openapi-validate.sh runs this script in its venv and validates the result
as OpenAPI 3.0).
"""

import argparse
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "..", "api", "openapi.yaml")
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# admin_api's routes, as `shared/src/edge/admin.rs` (ADMIN_ROUTES) and the template name them.
ADMIN_ROUTES = {
    "/experiments",
    "/experiments/{name}",
    "/experiments/{name}/stop",
    "/experiments/{name}/ship",
    "/playbook",
    "/models/{version}/activate",
}
DEFAULT_ADMIN_SCOPE = "salesloop/admin"


def function_of(method, path):
    """The function that serves a route, as the template routes it."""
    if path in ADMIN_ROUTES:
        return "admin_api"
    if method == "post" and path.endswith("/messages"):
        return "process_message"
    if method == "post":
        return "end_conversation"
    return "read_api"


def downgrade(node):
    """A 3.1 schema (or any part of the document) in its 3.0 form."""
    if isinstance(node, list):
        return [downgrade(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [kind for kind in value if kind != "null"]
            if len(kinds) != 1:
                raise SystemExit(f"no 3.0 form for type {value}")
            out["type"] = kinds[0]
            if "null" in value:
                out["nullable"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "prefixItems":
            kinds = {json.dumps(downgrade(item), sort_keys=True) for item in value}
            if len(kinds) != 1:
                raise SystemExit("no 3.0 form for a tuple of mixed items")
            out["items"] = downgrade(value[0])
            out["minItems"] = out["maxItems"] = len(value)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "examples" and isinstance(value, list):
            # In a schema, 3.1's list; a media type's `examples` (a map) is already 3.0.
            if value:
                out["example"] = downgrade(value[0])
        elif key == "items" and value is False:
            continue
        else:
            out[key] = downgrade(value)
    # `{"type": "null"}` alone, as an alternative in anyOf / oneOf: 3.0 has no null type.
    if out.get("type") == "null":
        return {"nullable": True}
    return out


def convert(spec, opts):
    doc = downgrade({k: v for k, v in spec.items() if k not in ("jsonSchemaDialect", "webhooks")})
    doc["openapi"] = "3.0.3"
    doc.get("info", {}).get("license", {}).pop("identifier", None)
    # 3.0 has no anyOf member that is only `nullable`: fold it into the other member.
    fold_nullable(doc)
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.clear()
    schemes["Jwt"] = {
        "type": "oauth2",
        "flows": {},
        "x-amazon-apigateway-authorizer": {
            "type": "jwt",
            "identitySource": "$request.header.Authorization",
            "jwtConfiguration": {"issuer": opts.issuer, "audience": opts.audience},
        },
    }
    doc["security"] = [{"Jwt": []}]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            function = opts.prefix + function_of(method, path)
            arn = f"arn:aws:lambda:{opts.region}:{opts.account}:function:{function}"
            operation["x-amazon-apigateway-integration"] = {
                "type": "aws_proxy",
                "httpMethod": "POST",
                "uri": arn,
                "payloadFormatVersion": "2.0",
            }
            admin = path in ADMIN_ROUTES
            if admin != ("admin" in operation.get("tags", [])):
                raise SystemExit(f"{method} {path}: tagged admin, or an admin route, not both")
            if admin:
                # The authorizer's scope check (the route's authorizationScopes) before the
                # function's own.
                operation["security"] = [{"Jwt": [opts.admin_scope]}]
            elif operation.get("security") != []:
                operation["security"] = [{"Jwt": []}]
    return doc


def fold_nullable(node):
    if isinstance(node, list):
        for item in node:
            fold_nullable(item)
        return
    if not isinstance(node, dict):
        return
    for key in ("anyOf", "oneOf"):
        members = node.get(key)
        if isinstance(members, list) and {"nullable": True} in members:
            rest = [m for m in members if m != {"nullable": True}]
            node.pop(key)
            if len(rest) == 1:
                # `allOf` keeps a `$ref` beside `nullable`, which 3.0 would otherwise ignore.
                node["allOf"] = rest
            else:
                node[key] = rest
            node["nullable"] = True
    for value in node.values():
        fold_nullable(value)


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--region", required=True)
    args.add_argument("--account", required=True)
    args.add_argument("--issuer", required=True)
    args.add_argument("--audience", required=True, action="append")
    args.add_argument("--admin-scope", default=DEFAULT_ADMIN_SCOPE)
    args.add_argument("--prefix", default="")
    args.add_argument("--spec", default=SPEC)
    args.add_argument("--out", default="-")
    opts = args.parse_args()
    with open(opts.spec, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    doc = convert(spec, opts)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if opts.out == "-":
        sys.stdout.write(text)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
        with open(opts.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
