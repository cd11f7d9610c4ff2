"""The subset of kustomize the project's manifests use, for the tools that
read them without a cluster (tools/validate_deploy.py, the pod runners of
test-k8s-pods and test-k8s-scale-out): `resources` (files, and directories
holding a kustomization: an overlay's base), `secretGenerator` (names and
files, collected from the base and the overlay) and `patches` by `path`
(strategic merge by kind and name: maps merged, lists of named items merged
by name, anything else replaced). Namespaces, labels, images and name
hashes are left to kustomize itself."""

import copy
import pathlib

import yaml

KUSTOMIZATION = "kustomization.yaml"


def merge(base, patch):
    """Strategic merge of `patch` into `base` (a new object)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            at = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = merge(out[at], item)
        return out
    return copy.deepcopy(patch)


def render(k8s: pathlib.Path):
    """(kustomization with every secretGenerator, documents) of the
    kustomization in directory `k8s`, its bases included, patches applied."""
    kustomization = yaml.safe_load((k8s / KUSTOMIZATION).read_text())
    docs, generators = [], []
    for name in kustomization.get("resources", []):
        path = (k8s / name).resolve()
        if path.is_dir():
            base, base_docs = render(path)
            generators += base.get("secretGenerator", [])
            docs += base_docs
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    generators += kustomization.get("secretGenerator", [])
    for patch in kustomization.get("patches", []):
        for doc in (d for d in yaml.safe_load_all((k8s / patch["path"]).read_text()) if d):
            at = next((i for i, d in enumerate(docs) if d["kind"] == doc["kind"]
                       and d["metadata"]["name"] == doc["metadata"]["name"]), None)
            if at is None:
                raise ValueError(f"{k8s / patch['path']}: patches {doc['kind']} {doc['metadata']['name']}, "
                                 "which no resource of the kustomization defines")
            docs[at] = merge(docs[at], doc)
    return dict(kustomization, secretGenerator=generators), docs
