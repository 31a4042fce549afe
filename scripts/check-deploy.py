#!/usr/bin/env python3
"""Checks for deploy/ that need a parser (scripts/check-deploy runs them).

  check-deploy.py DEPLOY_DIR                      every YAML file; Kubernetes objects
  check-deploy.py --extract FILE CONFIGMAP DIR    writes a ConfigMap's files into DIR
  check-deploy.py --units FILE...                 systemd units, structurally
  check-deploy.py --containerfile FILE            a Containerfile, structurally
"""
import glob
import os
import re
import sys

import yaml

errors = []


def error(where, message):
    errors.append(f"{where}: {message}")


def known_variables():
    """FRAMECAST_* variables the executable reads (env("…") in Sources/framecast)."""
    names = set()
    for path in glob.glob("Sources/framecast/*.swift"):
        names.update(re.findall(r'env\("(FRAMECAST_[A-Z0-9_]+)"\)', open(path).read()))
    return names


def check_variable(where, name, known):
    if name.startswith("FRAMECAST_NATS_") and name.endswith("_PASSWORD") and name != "FRAMECAST_NATS_PASSWORD":
        return  # the NATS servers' own variables (accounts.conf)
    if name.startswith("FRAMECAST_POSTGRES_") and name.endswith("_PASSWORD"):
        return  # the services' PostgreSQL passwords, read by deploy/postgres/roles.sql (psql \getenv)
    if name.startswith("FRAMECAST_") and name not in known:
        error(where, f"{name} is not a variable framecast reads")


# The fields these manifests may use (a misspelt field would otherwise be ignored silently).
FIELDS = {
    "Deployment": {"replicas", "strategy", "selector", "template", "minReadySeconds", "revisionHistoryLimit"},
    "StatefulSet": {"serviceName", "replicas", "podManagementPolicy", "selector", "template", "volumeClaimTemplates",
                    "updateStrategy"},
    "Job": {"backoffLimit", "template", "ttlSecondsAfterFinished", "activeDeadlineSeconds"},
    "pod": {"containers", "initContainers", "volumes", "restartPolicy", "terminationGracePeriodSeconds",
            "securityContext", "affinity", "serviceAccountName", "nodeSelector", "tolerations"},
    "container": {"name", "image", "command", "args", "env", "envFrom", "ports", "livenessProbe", "readinessProbe",
                  "startupProbe", "resources", "volumeMounts", "securityContext", "workingDir", "imagePullPolicy",
                  "lifecycle"},
    "probe": {"httpGet", "tcpSocket", "exec", "periodSeconds", "failureThreshold", "initialDelaySeconds",
              "timeoutSeconds", "successThreshold"},
}


def check_fields(where, what, mapping):
    for key in mapping or {}:
        if key not in FIELDS[what]:
            error(where, f"unknown {what} field {key!r}")


OFFICIAL = ("docker.io/library/nats:", "docker.io/library/postgres:", "docker.io/library/eclipse-mosquitto:")
FRAMECAST_IMAGE = "registry.example.com/framecast:"


def check_kubernetes(files):
    known = known_variables()
    docs = []
    for path in files:
        try:
            loaded = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        except yaml.YAMLError as e:
            error(path, f"not valid YAML: {e}")
            continue
        for d in loaded:
            docs.append((path, d))
    by_kind = {}
    for path, d in docs:
        if not isinstance(d, dict):
            error(path, "a document is not a mapping")
            continue
        for field in ("apiVersion", "kind", "metadata"):
            if field not in d:
                error(path, f"a document has no {field}")
        meta = d.get("metadata") or {}
        if "name" not in meta:
            error(path, f"{d.get('kind')} without metadata.name")
        if d.get("kind") != "Namespace" and meta.get("namespace") != "framecast":
            error(path, f"{d.get('kind')} {meta.get('name')} is not in namespace framecast")
        by_kind.setdefault(d.get("kind"), {})[meta.get("name")] = (path, d)

    secrets = {}
    for name, (path, d) in by_kind.get("Secret", {}).items():
        secrets[name] = set((d.get("stringData") or {}).keys()) | set((d.get("data") or {}).keys())
    configmaps = {name: (path, d) for name, (path, d) in by_kind.get("ConfigMap", {}).items()}
    claims = set(by_kind.get("PersistentVolumeClaim", {}).keys())

    # ConfigMaps copying deploy/ files must be identical to them.
    for name, (path, d) in configmaps.items():
        source = ((d.get("metadata") or {}).get("annotations") or {}).get("framecast.dev/source")
        for key, value in (d.get("data") or {}).items():
            if key.startswith("FRAMECAST_"):
                check_variable(f"{path} ConfigMap {name}", key, known)
            if not source:
                continue
            candidate = source if os.path.isfile(source) else os.path.join(source, key)
            if os.path.isfile(candidate) and open(candidate).read() != value:
                error(path, f"ConfigMap {name} key {key} differs from {candidate}")

    pod_labels = []
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, (path, d) in by_kind.get(kind, {}).items():
            where = f"{path} {kind} {name}"
            spec = d.get("spec") or {}
            check_fields(where, kind, spec)
            template = spec.get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            pod_labels.append(labels)
            if kind != "Job":
                selector = (spec.get("selector") or {}).get("matchLabels") or {}
                if not selector or any(labels.get(k) != v for k, v in selector.items()):
                    error(where, "selector.matchLabels does not match the pod template's labels")
            if kind == "StatefulSet" and "serviceName" not in spec:
                error(where, "no serviceName")
            pod = template.get("spec") or {}
            check_fields(where, "pod", pod)
            volumes = {v.get("name"): v for v in pod.get("volumes") or []}
            for t in spec.get("volumeClaimTemplates") or []:
                volumes[(t.get("metadata") or {}).get("name")] = t
            for v in volumes.values():
                if "configMap" in v and v["configMap"].get("name") not in configmaps:
                    error(where, f"volume {v.get('name')}: no ConfigMap {v['configMap'].get('name')}")
                if "secret" in v and v["secret"].get("secretName") not in secrets:
                    error(where, f"volume {v.get('name')}: no Secret {v['secret'].get('secretName')}")
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("claimName") not in claims:
                    error(where, f"volume {v.get('name')}: no PersistentVolumeClaim")
            containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
            if not pod.get("containers"):
                error(where, "no containers")
            for c in containers:
                cw = f"{where} container {c.get('name')}"
                check_fields(cw, "container", c)
                for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                    check_fields(f"{cw} {probe_name}", "probe", c.get(probe_name))
                image = c.get("image", "")
                if not (image.startswith(OFFICIAL) or image.startswith(FRAMECAST_IMAGE)):
                    error(cw, f"image {image!r} is neither an official server image nor framecast's")
                for m in c.get("volumeMounts") or []:
                    if m.get("name") not in volumes:
                        error(cw, f"mounts unknown volume {m.get('name')}")
                for source in c.get("envFrom") or []:
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref and ref not in configmaps:
                        error(cw, f"envFrom: no ConfigMap {ref}")
                for e in c.get("env") or []:
                    check_variable(cw, e.get("name", ""), known)
                    ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or None
                    if ref and ref.get("key") not in secrets.get(ref.get("name"), set()):
                        error(cw, f"env {e.get('name')}: no key {ref.get('key')} in Secret {ref.get('name')}")
                ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
                for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                    probe = c.get(probe_name)
                    if not probe:
                        continue
                    action = probe.get("httpGet") or probe.get("tcpSocket")
                    if action and action.get("port") not in ports:
                        error(cw, f"{probe_name} uses port {action.get('port')} the container does not declare")
                if image.startswith(FRAMECAST_IMAGE) and kind == "Deployment":
                    live = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
                    ready = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
                    if live != "/healthz" or ready != "/readyz":
                        error(cw, f"probes must be /healthz (liveness) and /readyz (readiness), are {live}, {ready}")
    for name, (path, d) in by_kind.get("Service", {}).items():
        selector = (d.get("spec") or {}).get("selector") or {}
        if not any(all(labels.get(k) == v for k, v in selector.items() if k != "statefulset.kubernetes.io/pod-name")
                   for labels in pod_labels):
            error(f"{path} Service {name}", "selects no pod template")
    # Every role runs as a Deployment.
    for role in ("gateway", "storage", "album", "media"):
        if f"framecast-{role}" not in by_kind.get("Deployment", {}):
            error("deploy/kubernetes", f"no Deployment framecast-{role}")
    return len(docs)


def extract(path, configmap, directory):
    for d in yaml.safe_load_all(open(path)):
        if d and d.get("kind") == "ConfigMap" and d["metadata"]["name"] == configmap:
            for key, value in d["data"].items():
                with open(os.path.join(directory, key), "w") as f:
                    f.write(value)
            return
    error(path, f"no ConfigMap {configmap}")


UNIT_SECTIONS = {"Unit", "Service", "Install"}


def check_units(files):
    known = known_variables()
    for path in files:
        section = None
        keys = {}
        for number, line in enumerate(open(path), 1):
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                if section not in UNIT_SECTIONS:
                    error(f"{path}:{number}", f"unknown section [{section}]")
                continue
            if "=" not in line or section is None:
                error(f"{path}:{number}", "not KEY=VALUE inside a section")
                continue
            key, value = line.split("=", 1)
            keys.setdefault(section, set()).add(key)
            if key == "Environment":
                check_variable(f"{path}:{number}", value.split("=", 1)[0], known)
        if path.endswith(".service") and "ExecStart" not in keys.get("Service", set()):
            error(path, "no ExecStart")


INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def check_containerfile(path):
    continued = False
    seen = []
    for number, line in enumerate(open(path), 1):
        stripped = line.strip()
        if not continued and (not stripped or stripped.startswith("#")):
            continue
        if not continued:
            word = stripped.split()[0]
            if word.upper() not in INSTRUCTIONS:
                error(f"{path}:{number}", f"unknown instruction {word}")
            seen.append((word.upper(), stripped))
        continued = stripped.endswith("\\")
    if not seen or seen[0][0] not in ("FROM", "ARG"):
        error(path, "does not start with FROM")
    if not any(w == "ENTRYPOINT" for w, _ in seen):
        error(path, "no ENTRYPOINT")
    for word, text in seen:
        if word == "FROM" and len(text.split()) < 2:
            error(path, "FROM without an image")
        if word == "COPY" and "--from=" not in text:
            for source in text.split()[1:-1]:
                if not os.path.exists(source):
                    error(path, f"COPY source {source} does not exist in the repository")


def main(argv):
    if len(argv) >= 1 and argv[0] == "--extract":
        extract(argv[1], argv[2], argv[3])
    elif len(argv) >= 1 and argv[0] == "--units":
        check_units(argv[1:])
    elif len(argv) == 2 and argv[0] == "--containerfile":
        check_containerfile(argv[1])
    elif len(argv) == 1:
        files = sorted(glob.glob(os.path.join(argv[0], "**", "*.yaml"), recursive=True)
                       + glob.glob(os.path.join(argv[0], "**", "*.yml"), recursive=True))
        if not files:
            error(argv[0], "no YAML files")
        check_kubernetes(files)
        # systemd units are checked structurally too (variables framecast does not read).
        check_units(sorted(glob.glob(os.path.join(argv[0], "systemd", "*.service"))))
        # Environment files: KEY=VALUE lines naming variables framecast reads.
        known = known_variables()
        for path in sorted(glob.glob(os.path.join(argv[0], "**", "*.env.example"), recursive=True)):
            for number, line in enumerate(open(path), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not re.match(r"^[A-Z_][A-Z0-9_]*=", line):
                    error(f"{path}:{number}", "not KEY=VALUE")
                    continue
                check_variable(f"{path}:{number}", line.split("=", 1)[0], known)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for e in errors:
        print(f"check-deploy: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
