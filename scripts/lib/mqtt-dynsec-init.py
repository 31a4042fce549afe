#!/usr/bin/env python3
"""Writes the initial state of mosquitto's dynamic-security plugin for a Framecast broker.

    mqtt-dynsec-init.py FILE [--bridge NAME]... [--tester NAME]

Passwords come from the environment, never the command line (it shows in `ps`):
  FRAMECAST_MQTT_USER / FRAMECAST_MQTT_PASSWORD   the album service's identity (default user
                                                   "album"): it administers the plugin (frames'
                                                   clients and roles) and publishes to frames
  FRAMECAST_MQTT_BRIDGE_PASSWORD_<NAME>            one per --bridge NAME (a leaf's bridge)
  FRAMECAST_MQTT_TESTER_PASSWORD                   --tester NAME: an identity that may use every
                                                   topic, for the test suite's own observers and the
                                                   MQTT wrapper's tests (scripts/test only)

Nothing else may connect until the album service creates it: frames get their own client and
role at registration. `defaultACLAccess` denies everything not granted, receiving included, so
a frame whose role loses an album stops receiving it even on a subscription it already holds.

The file is written only if it does not exist (the broker keeps it up to date afterwards, so
frames' identities survive restarts); mode 0600, owned by the broker's user when run as root.
"""
import base64
import hashlib
import json
import os
import pwd
import sys

ITERATIONS = 101  # what mosquitto_ctrl uses for PBKDF2-SHA512


def hashed(password: str) -> dict:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS}


def acl(kind: str, topic: str) -> dict:
    return {"acltype": kind, "topic": topic, "allow": True}


def main() -> int:
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    path, bridges, tester = args[0], [], None
    rest = args[1:]
    while rest:
        if rest[0] == "--bridge" and len(rest) > 1:
            bridges.append(rest[1])
            rest = rest[2:]
        elif rest[0] == "--tester" and len(rest) > 1:
            tester = rest[1]
            rest = rest[2:]
        else:
            print(f"unknown argument: {rest[0]}", file=sys.stderr)
            return 2
    if os.path.exists(path):
        return 0
    user = os.environ.get("FRAMECAST_MQTT_USER") or "album"
    password = os.environ.get("FRAMECAST_MQTT_PASSWORD")
    if not password:
        print("FRAMECAST_MQTT_PASSWORD is not set", file=sys.stderr)
        return 2

    service = {"username": user, "textName": "Framecast album service", "roles": [
        {"rolename": "dynsec-admin"}, {"rolename": "framecast-service"}]}
    service.update(hashed(password))
    clients = [service]
    for name in bridges:
        secret = os.environ.get(f"FRAMECAST_MQTT_BRIDGE_PASSWORD_{name.upper().replace('-', '_')}")
        if not secret:
            print(f"no password for bridge {name}", file=sys.stderr)
            return 2
        client = {"username": name, "textName": "Framecast leaf bridge", "roles": [{"rolename": "framecast-bridge"}]}
        client.update(hashed(secret))
        clients.append(client)

    if tester:
        secret = os.environ.get("FRAMECAST_MQTT_TESTER_PASSWORD")
        if not secret:
            print("FRAMECAST_MQTT_TESTER_PASSWORD is not set", file=sys.stderr)
            return 2
        client = {"username": tester, "textName": "Framecast test suite", "roles": [{"rolename": "framecast-tester"}]}
        client.update(hashed(secret))
        clients.append(client)

    down = ["albums/#", "photos/#", "frames/+/sync", "frames/+/command", "frames/+/config"]
    up = ["frames/+/status", "frames/+/heartbeat"]
    state = {
        "clients": clients,
        "roles": [
            {"rolename": "dynsec-admin", "acls": [
                acl("publishClientSend", "$CONTROL/dynamic-security/#"),
                acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
                acl("subscribePattern", "$CONTROL/dynamic-security/#")]},
            # The album service publishes every frame topic and reads frames' telemetry.
            {"rolename": "framecast-service", "acls": [
                acl("publishClientSend", "albums/#"), acl("publishClientSend", "photos/#"),
                acl("publishClientSend", "frames/#"),
                acl("subscribePattern", "frames/#"), acl("publishClientReceive", "frames/#"),
                acl("subscribePattern", "albums/#"), acl("publishClientReceive", "albums/#"),
                acl("subscribePattern", "photos/#"), acl("publishClientReceive", "photos/#")]},
            # A leaf's bridge: what flows down to frames, and their telemetry up.
            {"rolename": "framecast-bridge", "acls":
                [acl("subscribePattern", t) for t in down] + [acl("publishClientReceive", t) for t in down]
                + [acl("publishClientSend", t) for t in up]},
        ],
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                             "subscribe": False, "unsubscribe": True},
    }
    if tester:
        # Only in the test suite's brokers: every topic.
        state["roles"].append({"rolename": "framecast-tester", "acls": [
            acl("publishClientSend", "#"), acl("subscribePattern", "#"), acl("publishClientReceive", "#")]})
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    if os.geteuid() == 0:
        # The broker drops to its own user, which must read the file and write it back.
        try:
            os.chown(tmp, pwd.getpwnam("mosquitto").pw_uid, -1)
        except KeyError:
            pass
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
