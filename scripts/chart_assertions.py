"""Checks on `helm template` output that schema validation cannot make.

Usage: chart_assertions.py CASE RENDERED.yaml RELEASE_NAMESPACE
CASE is "cluster" (all namespaces watched, leader election on) or
"namespaced:NS" (only NS watched, leader election off). Run by
scripts/validate-chart.sh with the tools venv's Python (it has PyYAML).
Prints every failed check and exits 1 if there was one.
"""

import sys

import yaml

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_deployment(deploy, leader_election):
    pod = deploy["spec"]["template"]["spec"]
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "pod runAsNonRoot is not true")
    check(
        pod.get("securityContext", {}).get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "pod seccompProfile is not RuntimeDefault",
    )
    containers = pod["containers"]
    check(len(containers) == 1, "expected one container")
    c = containers[0]
    sc = c.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True, "container runAsNonRoot is not true")
    check(sc.get("readOnlyRootFilesystem") is True, "container root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, "container allows privilege escalation")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "container does not drop ALL capabilities")
    check(sc.get("privileged") is not True, "container is privileged")
    check(c.get("args") == ["run"], "container does not run `run`")
    ports = {p["name"]: p for p in c.get("ports", [])}
    check("http" in ports, "no container port named http")
    check(c.get("livenessProbe", {}).get("httpGet") == {"path": "/healthz", "port": "http"}, "liveness is not GET /healthz on http")
    check(c.get("readinessProbe", {}).get("httpGet") == {"path": "/readyz", "port": "http"}, "readiness is not GET /readyz on http")
    env = env_of(c)
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        ref = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        check(ref == field, f"{name} does not come from the downward API ({field})")
    check(env.get("PC_LEADER_ELECTION", {}).get("value") == str(leader_election).lower(), "PC_LEADER_ELECTION does not match")
    if not leader_election:
        check(deploy["spec"].get("replicas") == 1, "leader election off with more than one replica")
        check(deploy["spec"].get("strategy", {}).get("type") == "Recreate", "leader election off without the Recreate strategy")
        check("PC_LEASE_NAME" not in env, "PC_LEASE_NAME set with leader election off")
    return env


def operator_rules(doc):
    """Whether a (Cluster)Role is the reconcilers' one."""
    return any("puppetnodes" in r.get("resources", []) for r in doc.get("rules", []))


def rules_of(docs, kind, name_suffix=""):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def granted(role, resource, group="puppet-conductor.dev"):
    """The verbs `role` grants on `resource` of `group` (unnarrowed rules only)."""
    verbs = set()
    for r in role.get("rules", []):
        if group in r.get("apiGroups", []) and resource in r.get("resources", []) and not r.get("resourceNames"):
            verbs |= set(r.get("verbs", []))
    return verbs


def check_pool_rules(docs):
    """PuppetNodePool: the reconcilers' role reads pools, writes their status, makes and
    removes their nodes; the CRD role lets the operator wait for the pool CRD."""
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole") and operator_rules(d)]
    check(len(roles) == 1, f"expected one reconciler role, found {len(roles)}")
    for role in roles:
        name = f"{role['kind']} {role['metadata']['name']}"
        pools = granted(role, "puppetnodepools")
        check(pools == {"get", "list", "watch"}, f"{name}: puppetnodepools {sorted(pools)}, want get/list/watch only")
        status = granted(role, "puppetnodepools/status")
        check(status == {"patch", "update"}, f"{name}: puppetnodepools/status {sorted(status)}, want patch/update")
        finalizers = granted(role, "puppetnodepools/finalizers")
        check(finalizers == {"update"}, f"{name}: puppetnodepools/finalizers {sorted(finalizers)}, want update (blockOwnerDeletion on its nodes)")
        check(not granted(role, "puppetnodepools/scale"), f"{name}: the operator does not use puppetnodepools/scale")
        nodes = granted(role, "puppetnodes")
        want = {"get", "list", "watch", "create", "patch", "update", "delete"}
        check(nodes == want, f"{name}: puppetnodes {sorted(nodes)}, want {sorted(want)}")
    crd_roles = rules_of(docs, "ClusterRole", "-crds")
    names = {n for d in crd_roles for r in d["rules"] for n in r.get("resourceNames", [])}
    for crd in ("puppetmasters", "puppetnodes", "puppetnodepools"):
        check(f"{crd}.puppet-conductor.dev" in names, f"the CRD ClusterRole does not name {crd}.puppet-conductor.dev")


def main():
    case, path, release_ns = sys.argv[1:4]
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]

    for d in docs:
        for rule in d.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                check("*" not in rule.get(field, []), f"{d['kind']} {d['metadata']['name']}: wildcard in {field}")
            # The one deletion: a PuppetNodePool's own nodes (scale down, roll).
            check(
                "delete" not in rule.get("verbs", []) or rule.get("resources") == ["puppetnodes"],
                f"{d['kind']} {d['metadata']['name']}: the operator deletes nothing through RBAC but PuppetNodes",
            )
            if "secrets" in rule.get("resources", []):
                # get/create: the challenge key; patch: the in-use finalizer; list/watch:
                # the metadata-only watch that maps Secret changes to their masters.
                check(set(rule["verbs"]) <= {"get", "list", "watch", "create", "patch"}, "secrets beyond get/list/watch/create/patch")
        if d["kind"] in ("Role", "RoleBinding", "Deployment", "Service", "ServiceAccount"):
            check("namespace" in d["metadata"], f"{d['kind']} {d['metadata']['name']} has no namespace")

    deploys = [d for d in docs if d["kind"] == "Deployment"]
    check(len(deploys) == 1, "expected one Deployment")
    services = [d for d in docs if d["kind"] == "Service"]
    check(len(services) == 1 and services[0]["spec"]["ports"][0].get("targetPort") == "http", "expected one Service targeting port http")
    check(len(rules_of(docs, "ClusterRole", "-crds")) == 1, "no ClusterRole for reading the CRDs")
    check_pool_rules(docs)

    if case == "cluster":
        env = check_deployment(deploys[0], leader_election=True)
        check("PC_WATCH_NAMESPACE" not in env, "PC_WATCH_NAMESPACE set when watching all namespaces")
        check(any(operator_rules(d) for d in rules_of(docs, "ClusterRole")), "no ClusterRole for the reconcilers")
        check(not any(operator_rules(d) for d in rules_of(docs, "Role")), "reconciler Role while watching all namespaces")
        leases = [d for d in rules_of(docs, "Role") if any("leases" in r["resources"] for r in d["rules"])]
        check(len(leases) == 1 and leases[0]["metadata"]["namespace"] == release_ns, "no lease Role in the release namespace")
        lease_name = env.get("PC_LEASE_NAME", {}).get("value")
        for d in leases:
            for r in d["rules"]:
                check(r["verbs"] == ["create"] or r.get("resourceNames") == [lease_name], "lease rule not narrowed to PC_LEASE_NAME")
        check(env.get("PC_LEASE_NAMESPACE", {}).get("value") == release_ns, "PC_LEASE_NAMESPACE is not the release namespace")
    elif case.startswith("namespaced:"):
        watched = case.split(":", 1)[1]
        env = check_deployment(deploys[0], leader_election=False)
        check(env.get("PC_WATCH_NAMESPACE", {}).get("value") == watched, "PC_WATCH_NAMESPACE does not match")
        check(not any(operator_rules(d) for d in rules_of(docs, "ClusterRole")), "reconciler ClusterRole while watching one namespace")
        roles = [d for d in rules_of(docs, "Role") if operator_rules(d)]
        check(len(roles) == 1 and roles[0]["metadata"]["namespace"] == watched, f"no reconciler Role in {watched}")
        bindings = rules_of(docs, "RoleBinding")
        check(any(b["metadata"]["namespace"] == watched for b in bindings), f"no RoleBinding in {watched}")
        check(not any("leases" in r["resources"] for d in rules_of(docs, "Role") for r in d["rules"]), "lease Role with leader election off")
    else:
        sys.exit(f"chart_assertions.py: unknown case {case}")

    for f in failures:
        print(f"chart_assertions.py ({case}): {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
