"""Starts the operator binary exactly as a `helm template` render configures it.

Usage: chart_runs_binary.py RENDERED.yaml BINARY

Takes the Deployment's container args and env (downward-API values filled in as the
kubelet would), points KUBECONFIG at an API server on a closed loopback port and the
HTTP address at a free loopback port, and checks that the binary accepts every flag
and value the chart sets: it must answer /healthz with 200 (alive while it retries the
API server) and exit 0 on SIGTERM. Catches drift between the chart's values and the
binary's flags, which schema validation cannot. Run by scripts/validate-chart.sh.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_of(rendered):
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deploys = [d for d in docs if d.get("kind") == "Deployment"]
    if len(deploys) != 1:
        sys.exit(f"{rendered}: expected one Deployment, found {len(deploys)}")
    return deploys[0]["metadata"], deploys[0]["spec"]["template"]["spec"]["containers"][0]


def env_for(meta, container, port, kubeconfig):
    downward = {"metadata.name": meta["name"] + "-0", "metadata.namespace": meta.get("namespace", "default")}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": kubeconfig}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            path = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if path not in downward:
                sys.exit(f"env {e['name']}: no stand-in for {e.get('valueFrom')}")
            env[e["name"]] = downward[path]
    # The rendered 0.0.0.0:8080 would clash with anything on this machine.
    env["PC_HTTP_ADDR"] = f"127.0.0.1:{port}"
    return env


def healthz(port, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status
        except OSError:
            time.sleep(0.2)
    return None


def main():
    rendered, binary = sys.argv[1], sys.argv[2]
    meta, container = container_of(rendered)
    with tempfile.TemporaryDirectory() as work:
        kubeconfig = os.path.join(work, "kubeconfig")
        with open(kubeconfig, "w") as f:
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "x",
                    "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                },
                f,
            )
        port = free_port()
        log_path = os.path.join(work, "operator.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [binary, *container.get("args", [])],
                env=env_for(meta, container, port, kubeconfig),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            status = healthz(port, 20)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "still running 15 s after SIGTERM"
        with open(log_path) as f:
            tail = "".join(f.readlines()[-20:])
    if status != 200 or code != 0:
        sys.exit(
            f"{rendered}: the binary as the chart runs it: /healthz {status}, exit {code}; log:\n{tail}"
        )
    print(f"{os.path.basename(rendered)}: the binary accepts the chart's args and env (/healthz 200, exit 0 on SIGTERM)")


if __name__ == "__main__":
    main()
