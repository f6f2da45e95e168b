"""The arguments of every subcommand, one function each (the CLI only parses; each command's
module in `forkscale.commands` runs it, imported when that command is chosen)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Subparsers = Any  # argparse._SubParsersAction[argparse.ArgumentParser] (a private class)


def add_spec(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-f", "--file", dest="spec", required=required, metavar="SPEC",
                   help="pool spec (YAML), e.g. examples/quickstart.yaml")
    p.add_argument("--state", metavar="PATH", help="ledger file (default: the spec's `state:`, "
                   "else .forkscale/state.sqlite next to the spec)")


def add_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="when another forkscale holds the ledger, wait for it (default: exit 1 naming it)")


def add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text (default; live progress on a terminal) or one JSON document")



def sim(sub: Subparsers) -> None:
    p = sub.add_parser("sim", help="run the vSphere twin (a vCenter stand-in) in the foreground",
                       description="Run the vSphere twin: a SOAP endpoint that stock vSphere clients talk to "
                                   "as if it were vCenter 8.0, with instant/linked/full clone physics.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8989, help="listen port (default 8989; 0 picks a free one)")
    p.add_argument("--world", metavar="WORLD.yaml", help="world description overriding the default world")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiply every task latency by F (0 = instant, 0.01 = 100x faster; default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed for latencies, MACs and UUIDs")
    p.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument("--password", help="login password (default: $FORKSCALE_SIM_PASSWORD or a random one)")
    p.add_argument("--state-dir", help="keep the world (inventory, VMs, disks, snapshots, events) and the CA in "
                                       "DIR across restarts (default: only the CA, in ~/.forkscale/sim)")
    p.add_argument("--fresh", action="store_true",
                   help="with --state-dir: start from the world file, replacing the saved world")


def demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="embedded twin + quickstart pool, end to end, with a summary")
    p.add_argument("--clones", type=int, default=20, help="how many instant clones to make (default 20)")
    p.add_argument("--time-scale", type=float, default=0.2,
                   help="twin task latency multiplier (default 0.2: instant clone ~0.2 s)")
    p.add_argument("--keep", action="store_true", help="leave the clones and the twin running until Ctrl-C")
    add_output(p)


def apply(sub: Subparsers) -> None:
    p = sub.add_parser("apply", help="converge every pool in SPEC, then exit")
    add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan (clones, rung, host) and change nothing")
    add_wait(p)
    add_output(p)


def scale(sub: Subparsers) -> None:
    p = sub.add_parser("scale", help="set a pool's count and converge")
    p.add_argument("pool")
    p.add_argument("count", type=int)
    add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_wait(p)
    add_output(p)


def status(sub: Subparsers) -> None:
    p = sub.add_parser("status", help="pools, their per-host sources and clones, from the ledger and vCenter")
    p.add_argument("pool", nargs="?")
    add_spec(p)
    add_output(p)


def destroy(sub: Subparsers) -> None:
    p = sub.add_parser("destroy", help="remove every clone of a pool (and, with --sources, its per-host sources)",
                       description="Remove every clone of a pool. Its per-host sources (`forkscale prepare`) are "
                                   "kept, and counted, unless --sources: then they are removed after the clones "
                                   "and marked gone in the ledger. The golden VM (`source:`) is never touched.")
    p.add_argument("pool")
    add_spec(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--sources", action="store_true",
                   help="also remove the pool's per-host sources (after its clones; never the golden VM)")
    add_wait(p)
    add_output(p)


def prepare(sub: Subparsers) -> None:
    p = sub.add_parser("prepare", help="make a frozen source of a pool on every host (for instant clones there)",
                       description="Clone the pool's golden VM (`source:`) onto every host of its placement "
                                   "(default: every host of the golden VM's cluster), freeze each replica with "
                                   "the pool's freeze method and record it in the ledger. Idempotent: healthy "
                                   "frozen sources are kept, thawed ones frozen again, missing ones replaced, "
                                   "and ones with a delta chain at sources.rotate_depth rotated.")
    p.add_argument("pool", nargs="?", help="only this pool (default: every pool in SPEC)")
    add_spec(p)
    add_wait(p)
    add_output(p)


def metrics(sub: Subparsers) -> None:
    p = sub.add_parser("metrics", help="serve fleet metrics (P-Share, delta chains, pools) on /metrics",
                       description="Read vCenter in one batched pass every --interval seconds and serve the "
                                   "fleet metrics for Prometheus on /metrics (health on /healthz).")
    add_spec(p)
    p.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                   help="where to serve /metrics (default 127.0.0.1:9464; port 0 picks a free one)")
    p.add_argument("--interval", type=float, default=20.0, metavar="SECONDS",
                   help="inventory refresh interval (default 20, vSphere's realtime sample period)")


def rehearse(sub: Subparsers) -> None:
    p = sub.add_parser("rehearse", help="rehearse an upgrade in a live clone, or a pool's new image, then report",
                       description="Instant-clone a running VM onto an isolated port group (or with its NICs "
                                   "disconnected), run upgrade steps and checks in it through VMware Tools guest "
                                   "operations (or over SSH), report, and destroy the clone. With --pool and "
                                   "--snapshot, -f is a pool spec: a linked clone of the pool's golden VM at the "
                                   "new snapshot runs the pool's checks, and the report says whether pushing the "
                                   "image is safe. Exit 0: every step and check passed; 1: a step or check failed, "
                                   "or the clone could not be made, reached or removed; 2: bad spec; 130: "
                                   "interrupted.")
    p.add_argument("-f", "--file", dest="spec", required=True, metavar="SPEC",
                   help="rehearsal spec (YAML), e.g. examples/rehearsal.yaml; with --pool, the pool spec")
    p.add_argument("--pool", metavar="POOL", help="rehearse this pool's new image (needs --snapshot)")
    p.add_argument("--snapshot", metavar="NAME", help="the golden VM's snapshot holding the new image")
    p.add_argument("--keep", action="store_true", help="leave the clone running afterwards (to look around)")
    add_output(p)


def serve(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the controller: policy loops, HTTP API (claims, status), /metrics",
                       description="Reconcile every pool of SPEC continuously (each pool's policy every "
                                   "evaluate_every_s), serve the HTTP API (claim, release, status, count) and "
                                   "/metrics. The API needs a bearer token: --token-file (mode 0600) or "
                                   "$FORKSCALE_API_TOKEN. SIGTERM stops gracefully.")
    add_spec(p)
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="API address (default 127.0.0.1:8080; port 0 picks a free one, printed on start)")
    p.add_argument("--token-file", metavar="FILE", help="API bearer token (mode 0600; default $FORKSCALE_API_TOKEN)")
    p.add_argument("--dry-run", action="store_true", help="log every decision and plan, change nothing")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long rounds in flight may finish before they are abandoned (default 30)")
    p.add_argument("--metrics-interval", type=float, default=20.0, metavar="SECONDS",
                   help="fleet metrics inventory refresh interval (default 20)")


def claims(sub: Subparsers) -> None:
    for name, text in (("claim", "claim a ready clone of a pool from a running `forkscale serve`"),
                       ("release", "release a claimed clone (on_release: refresh replaces it, keep returns it)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("pool")
        if name == "claim":
            p.add_argument("--user", help="who claims it (default: the login name)")
            p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                           help="wait this long for a clone when no spare is ready (default 30, max 300)")
        else:
            p.add_argument("vm", help="the claimed clone's name")
        p.add_argument("--url", help="controller URL (default $FORKSCALE_URL or http://127.0.0.1:8080)")
        p.add_argument("--token-file", metavar="FILE", help="API bearer token (mode 0600; default "
                       "$FORKSCALE_API_TOKEN)")
        add_output(p)


def promote(sub: Subparsers) -> None:
    p = sub.add_parser("promote", help="make linked clones full clones in place (PromoteDisks_Task)",
                       description="Convert linked clones of a pool into full clones in place: each keeps its "
                                   "identity and data, its disk stops depending on the pool's replica (removed "
                                   "with its last dependant). A persisted operation: kill it and run the same "
                                   "command again to resume.")
    p.add_argument("pool")
    p.add_argument("vm", nargs="*", help="the linked clones to promote (or --all)")
    p.add_argument("--all", action="store_true", help="every linked clone of the pool")
    add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_wait(p)
    add_output(p)


def rebalance(sub: Subparsers) -> None:
    p = sub.add_parser("rebalance", help="spread a pool's clones over its datastores and hosts (vacate removed ones)",
                       description="Move a pool's clones so they spread over placement.datastores in proportion "
                                   "to free space (none past rebalance.max_used_pct) and over hosts by clone count "
                                   "and memory; a datastore left out of placement.datastores is vacated, clones "
                                   "and replica. Unclaimed instant/linked clones are re-created with the same "
                                   "identity, full clones relocated; claimed ones wait for release unless --force. "
                                   "A persisted operation: kill it and run the same command again to resume.")
    p.add_argument("pool")
    add_spec(p)
    p.add_argument("--force", action="store_true",
                   help="move claimed clones now (linked: relocated with their data; instant: re-created and "
                        "handed back) instead of waiting for their release")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_wait(p)
    add_output(p)


def evacuate(sub: Subparsers) -> None:
    p = sub.add_parser("evacuate", help="move every clone off a host (for maintenance), then remove its source",
                       description="Stop placing clones on HOST, move its clones to other hosts (instant clones "
                                   "re-created from those hosts' sources, linked and full ones migrated; claimed "
                                   "ones per the pool's rollout.claimed) and remove its per-host sources; say when "
                                   "the host is empty. --enter then calls EnterMaintenanceMode_Task.")
    p.add_argument("host")
    add_spec(p)
    p.add_argument("--enter", action="store_true", help="put the host into maintenance mode once it is empty")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long EnterMaintenanceMode_Task may wait for the host to empty (default 600)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    add_wait(p)
    add_output(p)


def push_image(sub: Subparsers) -> None:
    p = sub.add_parser("push-image", help="push a new image (golden VM snapshot) to a live pool, rolling",
                       description="Record a new image generation (the golden VM at SNAPSHOT) and roll the pool onto "
                                   "it: prime a frozen source of it on every host, then replace clones in batches "
                                   "under rollout.max_unavailable / rollout.batch (spares first; claimed clones when "
                                   "released, or by force with rollout.claimed: force), with the same identity and "
                                   "user disk. A batch whose clones fail above rollout.max_failure pauses it. Killed, "
                                   "the same command (or serve) resumes it. Exit 0 done, 1 paused/cancelled, 2 bad "
                                   "input.")
    p.add_argument("pool")
    p.add_argument("--snapshot", required=True, metavar="NAME", help="the golden VM's snapshot holding the new image")
    p.add_argument("--source", metavar="VM", help="another golden VM (default: the pool's current one)")
    add_spec(p)
    p.add_argument("--at", metavar="TIME", help="start at TIME (ISO 8601, or +SECONDS); serve runs it then")
    p.add_argument("--allow-partial", action="store_true",
                   help="a host that cannot be primed keeps the old image (reported) instead of stopping the push")
    p.add_argument("--dry-run", action="store_true", help="print the batches (which clones, in what order, which "
                                                          "wait for their user) and change nothing")
    add_wait(p)
    add_output(p)


def rollout(sub: Subparsers) -> None:
    p = sub.add_parser("rollout", help="status, pause, resume or cancel a pool's running operation",
                       description="status: the pool's image (current and target), clones per image and its open "
                                   "(else last) operation's progress. pause: no new step starts (from any process). "
                                   "resume: run it again here (failed steps retried). cancel: stop it, leaving the "
                                   "pool mixed and consistent.")
    p.add_argument("action", choices=["status", "pause", "resume", "cancel"])
    p.add_argument("pool")
    add_spec(p)
    add_wait(p)
    add_output(p)


def rollback(sub: Subparsers) -> None:
    p = sub.add_parser("rollback", help="push the pool's previous image back (cancels a push in progress)")
    p.add_argument("pool")
    add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the batches and change nothing")
    add_wait(p)
    add_output(p)


def refresh(sub: Subparsers) -> None:
    p = sub.add_parser("refresh", help="replace clones with fresh ones from the current image (same identity)",
                       description="Destroy and re-clone the named clones (default: all) from the pool's current "
                                   "image with the same name, IP, MAC and hostname (refresh.identity: new for fresh "
                                   "ones) and the same user disk, in batches under the pool's rollout settings.")
    p.add_argument("pool")
    p.add_argument("vms", nargs="*", metavar="VM", help="clones to refresh (default: every clone of the pool)")
    add_spec(p)
    p.add_argument("--dry-run", action="store_true", help="print the batches and change nothing")
    add_wait(p)
    add_output(p)


COMMAND_ARGS: tuple[Callable[[Subparsers], None], ...] = (sim, demo, apply, scale, status, destroy, prepare, metrics,
                                                          rehearse, serve, claims, push_image, rollout, rollback,
                                                          refresh, promote, rebalance, evacuate)
