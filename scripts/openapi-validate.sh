#!/usr/bin/env bash
# Checks that api/openapi.yaml is a valid OpenAPI 3.1 document, with a pinned
# openapi-spec-validator in a venv of its own (.venv-openapi, made on first use; a rerun with
# the pinned versions already installed installs nothing). Exits non-zero on an invalid spec.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION=0.9.0
# The JSON Schema implementation it checks the schemas with, pinned too.
JSONSCHEMA_VERSION=4.26.0
OPENAPI_SCHEMA_VALIDATOR_VERSION=0.9.0
VENV=.venv-openapi
SPEC=api/openapi.yaml

if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi

installed() {
    "$VENV/bin/python" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    ok = all(version(name) == wanted for name, wanted in zip(sys.argv[1::2], sys.argv[2::2]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

pins=(
    openapi-spec-validator "$VALIDATOR_VERSION"
    openapi-schema-validator "$OPENAPI_SCHEMA_VALIDATOR_VERSION"
    jsonschema "$JSONSCHEMA_VERSION"
)
if ! installed "${pins[@]}"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "openapi-spec-validator==$VALIDATOR_VERSION" \
        "openapi-schema-validator==$OPENAPI_SCHEMA_VALIDATOR_VERSION" \
        "jsonschema==$JSONSCHEMA_VERSION"
fi

"$VENV/bin/python" - "$SPEC" "$VALIDATOR_VERSION" <<'EOF'
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.readers import read_from_filename

path, version = sys.argv[1], sys.argv[2]
spec, base_uri = read_from_filename(path)
if spec.get("openapi") != "3.1.0":
    sys.exit(f"openapi: {path} declares openapi {spec.get('openapi')!r}, not 3.1.0")
errors = list(OpenAPIV31SpecValidator(spec, base_uri=base_uri).iter_errors())
for error in errors:
    location = "/".join(str(part) for part in error.absolute_path) or "(root)"
    print(f"openapi: {path}: {location}: {error.message}", file=sys.stderr)
if errors:
    sys.exit(f"openapi: {path} is not a valid OpenAPI 3.1 document ({len(errors)} errors)")
print(f"openapi: {path} is a valid OpenAPI 3.1 document (openapi-spec-validator {version})")
EOF

# The API Gateway import of it (scripts/openapi_apigateway.py: OpenAPI 3.0 with each route's
# integration and the JWT authorizer), made with placeholder ARNs and checked as OpenAPI 3.0.
IMPORT=${CARGO_TARGET_DIR:-target}/openapi-apigateway.json
"$VENV/bin/python" scripts/openapi_apigateway.py --region eu-west-1 --account 123456789012 \
    --issuer https://issuer.example.com --audience client --out "$IMPORT"
"$VENV/bin/python" - "$IMPORT" <<'EOF2'
import json
import sys

from openapi_spec_validator import OpenAPIV30SpecValidator

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    spec = json.load(f)
errors = list(OpenAPIV30SpecValidator(spec).iter_errors())
for error in errors[:20]:
    location = "/".join(str(part) for part in error.absolute_path) or "(root)"
    print(f"openapi: {path}: {location}: {error.message}", file=sys.stderr)
if errors:
    sys.exit(f"openapi: the API Gateway import is not a valid OpenAPI 3.0 document ({len(errors)} errors)")
methods = ("get", "put", "post", "delete", "patch")
operations = [op for item in spec["paths"].values() for m, op in item.items() if m in methods]
missing = [op.get("operationId") for op in operations if "x-amazon-apigateway-integration" not in op]
if missing:
    sys.exit(f"openapi: operations without an integration: {missing}")
# The admin routes go to admin_api and need the authorizer with the admin scope; no other route
# goes there or needs a scope.
admin = [op for op in operations if "admin" in op.get("tags", [])]
wrong = [
    op.get("operationId")
    for op in operations
    if (op in admin)
    != (
        op["x-amazon-apigateway-integration"]["uri"].endswith(":function:admin_api")
        and op.get("security") == [{"Jwt": ["salesloop/admin"]}]
    )
    or (op not in admin and op.get("security") not in ([], [{"Jwt": []}]))
]
if not admin or wrong:
    sys.exit(f"openapi: admin routes without admin_api and the admin scope, or others with them: {wrong}")
print(f"openapi: its API Gateway import ({path}) is a valid OpenAPI 3.0 document, {len(operations)} routes with their integrations ({len(admin)} admin routes with the admin scope)")
EOF2
