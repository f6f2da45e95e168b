"""`forkscale claim POOL` and `forkscale release POOL VM`: thin clients of a running `forkscale serve`.

The URL defaults to http://127.0.0.1:8080 (or $FORKSCALE_URL); the token comes from
`--token-file` (mode 0600) or $FORKSCALE_API_TOKEN, as for `serve`. Exit codes: 0 done; 1 the
controller could not do it now (503: no clone within --wait, shutting down) or is unreachable;
2 the request was refused as wrong (400 / 401 / 404 / 409; nothing changed).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from forkscale.workloads.api import load_token

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "FORKSCALE_URL"


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any],
          timeout: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    token = load_token(args.token_file)
    base = (args.url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"error": raw.decode(errors="replace").strip() or exc.reason}
        return exc.code, doc if isinstance(doc, dict) else {"error": str(doc)}, dict(exc.headers)


def _fail(status: int, doc: dict[str, Any], headers: dict[str, str]) -> int:
    message = doc.get("error", f"HTTP {status}")
    retry = headers.get("Retry-After")
    hint = f" (retry after {retry}s)" if status == 503 and retry and "retry after" not in message else ""
    print(f"error: HTTP {status}: {message}{hint}", file=sys.stderr)
    return 1 if status >= 500 else 2


def run(args: argparse.Namespace) -> int:
    pool = urllib.parse.quote(args.pool, safe="")
    try:
        if args.command == "claim":
            user = args.user or getpass.getuser()
            status, doc, headers = _call(args, "POST", f"/v1/pools/{pool}/claim",
                                         {"user": user, "wait_s": args.wait}, timeout=args.wait + 30)
            if status != 200:
                return _fail(status, doc, headers)
            if args.output == "json":
                print(json.dumps(doc, indent=2))
            else:
                print(f"{doc['vm']}  hostname {doc['hostname']}  ip {doc['ip']}  claimed by {user} at "
                      f"{doc['claimed_at']}")
            return 0
        status, doc, headers = _call(args, "POST", f"/v1/pools/{pool}/release", {"vm": args.vm}, timeout=30)
        if status != 202:
            return _fail(status, doc, headers)
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            what = "refreshing (destroyed and replaced by a fresh clone)" if doc.get("action") == "refreshing" \
                else "back in the pool"
            print(f"{doc['vm']}: released, {what}")
        return 0
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach the controller: {reason}", file=sys.stderr)
        return 1
