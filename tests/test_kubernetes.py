"""deploy/kubernetes, validated against Kubernetes' own schemas (kubernetes-validate): no
cluster is reachable here, so these are checked, never run. The kernel pod template is
rendered as gateway-provisioners' launch_kubernetes.py renders it."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
VERSION = "1.30.0"


def _manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "gateway.yaml").read_text()) if doc]


def _kernel_pod(**keywords: Any) -> dict[str, Any]:
    """The template rendered with the launcher's own Jinja settings and the keywords it
    derives from the launch's KERNEL_* variables."""
    env = Environment(
        loader=FileSystemLoader(DEPLOY), trim_blocks=True, lstrip_blocks=True,
        autoescape=select_autoescape(disabled_extensions=("j2", "yaml"), default_for_string=True, default=True),
    )
    docs = [d for d in yaml.safe_load_all(env.get_template("kernel-pod.yaml.j2").render(**keywords)) if d]
    assert len(docs) == 1
    return docs[0]


def _validate(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']} {doc['metadata'].get('name')}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("doc", _manifests(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_each_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    _validate(doc)


LAUNCH = {
    "kernel_id": "0f3c", "kernel_pod_name": "icotes-0f3c", "kernel_namespace": "icotes-kernels",
    "kernel_image": "icotes-kernel:latest", "kernel_service_account_name": "icotes-kernel",
    "kernel_username": "icotes", "kernel_language": "python",
}


def test_a_kernel_pod_is_valid_and_holds_no_privilege() -> None:
    # Keywords the stock template would honour, as a client might try to pass them: ignored.
    pod = _kernel_pod(**LAUNCH, kernel_uid=0, kernel_gid=0, kernel_volumes=["{hostPath: {path: /}}"])
    _validate(pod)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [container] = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["capabilities"]["drop"] == ["ALL"] and context["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["memory"]
    assert all("hostPath" not in volume for volume in spec["volumes"])
    assert pod["metadata"]["labels"]["component"] == "kernel"  # what the network policy selects


def test_kernel_pods_reach_only_the_gateway_and_only_it_reaches_them() -> None:
    docs = _manifests()
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == "icotes-kernels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"component": "kernel"}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    gateway = {"app.kubernetes.io/name": "icotes-gateway"}
    for rule in policy["spec"]["ingress"] + policy["spec"]["egress"]:
        peers = rule.get("from", []) + rule.get("to", [])
        assert peers and all(p["podSelector"]["matchLabels"] == gateway for p in peers)
    [egress] = policy["spec"]["egress"]
    assert egress["ports"] == [{"protocol": "TCP", "port": 8877}]  # the response port alone
    assert _gateway(docs)["spec"]["template"]["metadata"]["labels"] == gateway


def test_the_gateway_may_manage_pods_of_the_kernels_namespace_and_nothing_else() -> None:
    docs = _manifests()
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "icotes-kernels"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete"]}]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    env = _env(_gateway(docs))
    assert env["GP_NAMESPACE"]["value"] == role["metadata"]["namespace"]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["GP_RESPONSE_IP"]["value"] == "$(POD_IP)"


def test_replicas_share_a_store_only_they_reach() -> None:
    docs = _manifests()
    gateway = _gateway(docs)
    assert gateway["spec"]["replicas"] >= 2
    env = _env(gateway)
    names = list(env)
    # $(VAR) is expanded only from variables defined before it
    for name, uses in (("GATEWAY_STORE_URL", "REDIS_PASSWORD"), ("GATEWAY_REPLICA_ADDRESS", "POD_IP"), ("GP_RESPONSE_IP", "POD_IP")):
        assert f"$({uses})" in env[name]["value"] and names.index(uses) < names.index(name)
    assert env["GATEWAY_STORE_URL"]["value"].endswith("@icotes-store:6379/0")
    assert env["GATEWAY_STORE_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "store-secret"
    [store] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "icotes-store"]
    [redis] = store["spec"]["template"]["spec"]["containers"]
    assert redis["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "icotes-store"]
    assert service["spec"]["selector"] == store["spec"]["template"]["metadata"]["labels"]
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "store-only-from-the-gateway"]
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": gateway["spec"]["template"]["metadata"]["labels"]}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]


def _gateway(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "icotes-gateway"]
    return deployment


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
