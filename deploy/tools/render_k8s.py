#!/usr/bin/env python3
"""Render deploy/k8s kustomizations without kustomize, and split the result for validation.

Only the subset of kustomize that deploy/k8s uses is implemented, and anything else is an
error (so a new feature in a kustomization fails loudly here instead of rendering wrong):

- ``resources``: YAML files (one or more documents) and directories holding a kustomization;
- ``patches``: ``path:`` or inline ``patch:`` entries without ``target:``, each a strategic
  merge patch that names its object by ``kind`` + ``metadata.name``. Built-in kinds are merged
  like Kubernetes does for the fields we use (named lists such as ``containers``, ``env``,
  ``volumes`` merge by key, other lists are replaced, ``null`` deletes); custom resources get
  a JSON merge patch (RFC 7386), which is what kustomize does for kinds it has no schema for;
- ``images``: ``name`` -> ``newName`` / ``newTag`` / ``digest`` in every container list;
- ``namespace``.

When ``kubectl`` (``kubectl kustomize``) or ``kustomize`` is installed, ``--engine auto`` uses
it, and ``--compare`` checks that this renderer gives the same objects.

Usage::

    render_k8s.py deploy/k8s/overlays/gpu                  # multi-document YAML on stdout
    render_k8s.py deploy/k8s/overlays/gpu --split OUT      # OUT/builtin/*.yaml, OUT/custom/*.yaml
    render_k8s.py deploy/k8s/overlays/gpu --compare        # python renderer == kustomize?
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches", "images", "namespace"}

# Strategic-merge keys of the built-in list fields that we patch (from the Kubernetes API's
# patchMergeKey tags). Lists not named here are replaced as a whole, as in Kubernetes.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
PORT_MERGE_KEYS = ("containerPort", "port")  # container ports, then Service ports

Doc = dict[str, Any]


class RenderError(Exception):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


# -- loading ----------------------------------------------------------------------------------


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_NAMES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise RenderError(f"no kustomization file in {directory}")


def _load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        docs = [doc for doc in yaml.safe_load_all(fh) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
    return docs


def is_builtin(api_version: str) -> bool:
    """True for core/v1 and the *.k8s.io or dot-less API groups (apps, batch, policy, ...)."""
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return "." not in group or group.endswith(".k8s.io")


def _key(doc: Doc) -> tuple[str, str, str]:
    group = doc["apiVersion"].split("/", 1)[0] if "/" in doc["apiVersion"] else ""
    return group, doc["kind"], doc.get("metadata", {}).get("name", "")


# -- merging ----------------------------------------------------------------------------------


def _check_no_directives(patch: Any, where: str) -> None:
    if isinstance(patch, dict):
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                raise RenderError(f"{where}: patch directive {key!r} is not supported")
            _check_no_directives(value, where)
    elif isinstance(patch, list):
        for item in patch:
            _check_no_directives(item, where)


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def _list_merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if field == "ports":
        for key in PORT_MERGE_KEYS:
            if all(key in item for item in items):
                return key
        return None
    key = MERGE_KEYS.get(field)
    if key and all(key in item for item in items):
        return key
    return None


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch for the built-in fields listed in MERGE_KEYS (see module doc)."""
    if isinstance(patch, dict):
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value, key)
        return result
    if isinstance(patch, list) and isinstance(target, list):
        merge_key = _list_merge_key(field, patch)
        if merge_key and _list_merge_key(field, target) == merge_key:
            result = copy.deepcopy(target)
            index = {item[merge_key]: i for i, item in enumerate(result)}
            for item in patch:
                if item[merge_key] in index:
                    i = index[item[merge_key]]
                    result[i] = strategic_merge(result[i], item, field)
                else:
                    result.append(copy.deepcopy(item))
            return result
    return copy.deepcopy(patch)


def apply_patch(docs: list[Doc], patch: Doc, where: str) -> None:
    _check_no_directives(patch, where)
    if "kind" not in patch or not patch.get("metadata", {}).get("name"):
        raise RenderError(f"{where}: a patch needs kind and metadata.name")
    matches = [
        i
        for i, doc in enumerate(docs)
        if doc["kind"] == patch["kind"]
        and doc.get("metadata", {}).get("name") == patch["metadata"]["name"]
        and ("apiVersion" not in patch or _key(doc)[0] == _key(patch)[0])
    ]
    if len(matches) != 1:
        raise RenderError(
            f"{where}: patch for {patch['kind']}/{patch['metadata']['name']} matches "
            f"{len(matches)} resources"
        )
    i = matches[0]
    merge = strategic_merge if is_builtin(docs[i]["apiVersion"]) else json_merge
    docs[i] = merge(docs[i], patch)


# -- images -----------------------------------------------------------------------------------


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: name.rindex(":")]
    return name


def _new_image(image: str, rule: dict[str, Any]) -> str:
    name = rule.get("newName") or _image_name(image)
    if rule.get("digest"):
        return f"{name}@{rule['digest']}"
    if rule.get("newTag") is not None:
        return f"{name}:{rule['newTag']}"
    rest = image[len(_image_name(image)) :]
    return name + rest


def apply_images(node: Any, rules: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    image = container.get("image") if isinstance(container, dict) else None
                    if not isinstance(image, str):
                        continue
                    for rule in rules:
                        if _image_name(image) == rule["name"]:
                            container["image"] = _new_image(image, rule)
                            break
            apply_images(value, rules)
    elif isinstance(node, list):
        for item in node:
            apply_images(item, rules)


# -- rendering --------------------------------------------------------------------------------


def render(directory: Path) -> list[Doc]:
    """The objects that ``kustomize build directory`` would output (same content)."""
    kfile = _kustomization_file(directory)
    with kfile.open(encoding="utf-8") as fh:
        spec = yaml.safe_load(fh) or {}
    unsupported = set(spec) - SUPPORTED_KEYS
    if unsupported:
        raise RenderError(
            f"{kfile}: {sorted(unsupported)} not supported by this renderer; "
            "use kubectl kustomize, or extend deploy/tools/render_k8s.py"
        )
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(render(path) if path.is_dir() else _load_docs(path))
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        if _key(doc) in seen:
            raise RenderError(f"{directory}: duplicate resource {_key(doc)}")
        seen.add(_key(doc))
    for entry in spec.get("patches", []):
        if "target" in entry:
            raise RenderError(f"{kfile}: patches with target: are not supported")
        if "path" in entry:
            where = str(directory / entry["path"])
            patch_docs = _load_docs(directory / entry["path"])
        elif "patch" in entry:
            where = f"{kfile} (inline patch)"
            patch_docs = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc]
        else:
            raise RenderError(f"{kfile}: a patch needs path: or patch:")
        for patch in patch_docs:
            apply_patch(docs, patch, where)
    if spec.get("images"):
        for doc in docs:
            apply_images(doc, spec["images"])
    if spec.get("namespace"):
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return docs


def kustomize_command() -> list[str] | None:
    """``kubectl kustomize`` or ``kustomize build`` when one is installed and works."""
    for cmd in (["kubectl", "kustomize"], ["kustomize", "build"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return cmd
    return None


def render_with_kustomize(directory: Path, cmd: list[str]) -> list[Doc]:
    out = subprocess.run([*cmd, str(directory)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RenderError(f"{' '.join(cmd)} {directory} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def canonical(docs: list[Doc]) -> list[Doc]:
    return sorted(docs, key=lambda d: _key(d))


def split(docs: list[Doc], out: Path) -> list[Path]:
    """One file per object: out/builtin/NN-kind-name.yaml or out/custom/NN-kind-name.yaml."""
    written = []
    for n, doc in enumerate(docs):
        sub = "builtin" if is_builtin(doc["apiVersion"]) else "custom"
        name = doc.get("metadata", {}).get("name", "unnamed")
        path = out / sub / f"{n:02d}-{doc['kind']}-{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="folder with a kustomization.yaml")
    parser.add_argument("--engine", choices=("auto", "python", "kustomize"), default="auto")
    parser.add_argument("--split", type=Path, metavar="OUT", help="write one file per object")
    parser.add_argument(
        "--compare", action="store_true", help="exit 1 unless kustomize and this renderer agree"
    )
    args = parser.parse_args(argv)
    try:
        ours = render(args.directory)
        cmd = kustomize_command()
        if args.compare:
            if cmd is None:
                print(
                    "compare: no kubectl/kustomize installed, nothing to compare", file=sys.stderr
                )
                return 0
            theirs = render_with_kustomize(args.directory, cmd)
            if canonical(ours) != canonical(theirs):
                print(
                    f"compare: {args.directory}: python renderer and {' '.join(cmd)} differ",
                    file=sys.stderr,
                )
                ours_text = yaml.safe_dump_all(canonical(ours), sort_keys=True).splitlines()
                theirs_text = yaml.safe_dump_all(canonical(theirs), sort_keys=True).splitlines()
                import difflib

                sys.stderr.writelines(
                    line + "\n"
                    for line in difflib.unified_diff(
                        theirs_text, ours_text, "kustomize", "python", lineterm=""
                    )
                )
                return 1
            print(f"compare: {args.directory}: python renderer == {' '.join(cmd)}", file=sys.stderr)
            return 0
        if args.engine == "kustomize" or (args.engine == "auto" and cmd is not None):
            if cmd is None:
                raise RenderError("--engine kustomize: neither kubectl nor kustomize is installed")
            docs = render_with_kustomize(args.directory, cmd)
        else:
            docs = ours
    except RenderError as exc:
        print(f"render_k8s: {exc}", file=sys.stderr)
        return 1
    if args.split:
        for path in split(docs, args.split):
            print(path)
    else:
        sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
