#!/usr/bin/env python3
"""Writes JSON schemas for kubeconform, offline, from Kubernetes' own OpenAPI.

kubeconform looks a manifest's schema up as <kind>[-<group>]-<version>.json
(lower-case kind, the group's first label). Its default source is a download,
which this environment cannot do; these come from the swagger.json of the
pinned k8s.io/kubernetes module instead, one file per kind with every
definition beside it (references stay resolvable), made strict (unknown fields
are errors) and with Kubernetes' int-or-string and quantity types accepting
both forms, as kubectl does. CustomResourceDefinition files given with --crd
add their served versions' openAPIV3Schema the same way.

    schemas.py SWAGGER_JSON OUT_DIR [--crd CRD.yaml ...]
"""
import json
import os
import sys

import yaml  # PyYAML: Debian's python3-yaml or the test environment's venv

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def strict(schema):
    """Unknown fields are errors: objects with properties get additionalProperties false.

    Walks schema keywords only, so that a property *named* like a keyword (JSONSchemaProps
    has properties called "format" and "x-kubernetes-int-or-string") is left alone.
    """
    if not isinstance(schema, dict):
        return schema
    if schema.get("format") == "int-or-string" or schema.get("x-kubernetes-int-or-string") is True:
        return dict(INT_OR_STRING)
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and out.get("x-kubernetes-preserve-unknown-fields") is not True:
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(v) for v in out[key]]
    return out


def references(node, found):
    """Names of the definitions `node` refers to ("#/definitions/NAME"), added to `found`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref[len("#/definitions/"):])
        for v in node.values():
            references(v, found)
    elif isinstance(node, list):
        for v in node:
            references(v, found)


def closure(name, definitions):
    """`name` and every definition it reaches through references."""
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in definitions:
            continue
        seen.add(n)
        found = set()
        references(definitions[n], found)
        todo.extend(found - seen)
    return seen


def file_name(group, version, kind):
    group = group.split(".")[0]
    return f"{kind.lower()}-{group}-{version}.json" if group else f"{kind.lower()}-{version}.json"


def main(argv):
    swagger_path, out_dir, crds = argv[0], argv[1], []
    rest = argv[2:]
    while rest:
        if rest[0] != "--crd" or len(rest) < 2:
            sys.exit(__doc__)
        crds.append(rest[1])
        rest = rest[2:]
    with open(swagger_path) as f:
        definitions = json.load(f)["definitions"]
    definitions = {name: strict(d) for name, d in definitions.items()}
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = dict(INT_OR_STRING)
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = dict(QUANTITY)
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for name, d in definitions.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            schema = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$ref": f"#/definitions/{name}",
                "definitions": {n: definitions[n] for n in closure(name, definitions)},
            }
            path = os.path.join(out_dir, file_name(gvk["group"], gvk["version"], gvk["kind"]))
            with open(path, "w") as f:
                json.dump(schema, f)
            written += 1
    for crd_path in crds:
        with open(crd_path) as f:
            crd = yaml.safe_load(f)
        spec = crd["spec"]
        for version in spec["versions"]:
            body = strict(version["schema"]["openAPIV3Schema"])
            props = body.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
            path = os.path.join(out_dir, file_name(spec["group"], version["name"], spec["names"]["kind"]))
            with open(path, "w") as f:
                json.dump(body, f)
            written += 1
    print(f"wrote {written} schemas to {out_dir}")


main(sys.argv[1:])
