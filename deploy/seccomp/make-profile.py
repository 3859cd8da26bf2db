#!/usr/bin/env python3
"""Derive a seccomp profile that allows io_uring from a container engine's default profile.

Docker 25+ and podman leave io_uring out of their default seccomp profiles, so inside a
container `io_uring_setup` fails (EPERM under Docker, ENOSYS under podman) and ringcast falls
back to epoll. This script reads the engine's default profile (Docker/moby JSON format, which
podman, buildah and cri-o share), removes io_uring_setup, io_uring_enter and io_uring_register
from any rule that denies them and adds one rule allowing them. Everything else stays exactly as
the engine ships it. Run it on the machine where the containers run (install or test time):

    python3 deploy/seccomp/make-profile.py /etc/ringcast/seccomp-io_uring.json
    docker run --security-opt seccomp=/etc/ringcast/seccomp-io_uring.json ...

Without --from it reads the first of the DEFAULT_SOURCES that exists (podman/containers-common
install one; Docker compiles its profile in, so give Docker users `--from` a copy of their
engine version's default profile, or install containers-common, whose profile Docker accepts).
Exit codes: 0 written, 1 no source profile / unreadable / not a seccomp profile, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

IO_URING_SYSCALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register")
DEFAULT_SOURCES = (
    "/usr/share/containers/seccomp.json",   # containers-common (Debian, Fedora, ...)
    "/etc/containers/seccomp.json",         # an administrator's copy
)
RULE_COMMENT = "ringcast: allow io_uring (derived by deploy/seccomp/make-profile.py)"


class ProfileError(Exception):
    pass


def find_source(explicit: str | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    for candidate in DEFAULT_SOURCES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ProfileError(
        "no default seccomp profile found (looked for " + ", ".join(DEFAULT_SOURCES) + "); "
        "install containers-common (Debian: golang-github-containers-common) or pass --from FILE"
    )


def derive(profile: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``profile`` in which the io_uring syscalls are allowed."""
    if not isinstance(profile.get("syscalls"), list) or "defaultAction" not in profile:
        raise ProfileError("not a seccomp profile (no defaultAction or syscalls list)")
    out: dict[str, Any] = json.loads(json.dumps(profile))  # deep copy
    rules: list[dict[str, Any]] = []
    for rule in out["syscalls"]:
        names = rule.get("names")
        if names is None and "name" in rule:  # the old single-name form
            names = [rule["name"]]
        kept = [n for n in names or [] if n not in IO_URING_SYSCALLS]
        if names and not kept:
            continue  # the rule was only about io_uring: ours replaces it
        if names is not None and len(kept) != len(names):
            rule.pop("name", None)
            rule["names"] = kept
        rules.append(rule)
    rules.append({
        "names": list(IO_URING_SYSCALLS),
        "action": "SCMP_ACT_ALLOW",
        "args": [],
        "comment": RULE_COMMENT,
        "includes": {},
        "excludes": {},
    })
    out["syscalls"] = rules
    return out


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the container engine's default seccomp profile plus io_uring.")
    parser.add_argument("output", help="where to write the profile ('-' for stdout)")
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="the engine's default profile (default: the first of "
                             + ", ".join(DEFAULT_SOURCES) + ")")
    args = parser.parse_args(argv)
    try:
        source = find_source(args.source)
        try:
            profile = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise ProfileError(f"cannot read {source}: {exc}") from exc
        if not isinstance(profile, dict):
            raise ProfileError(f"{source}: not a seccomp profile (not a JSON object)")
        derived = derive(profile)
    except ProfileError as exc:
        print(f"make-profile: {exc}", file=sys.stderr)
        return 1
    if args.output == "-":
        json.dump(derived, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        write_atomically(Path(args.output), derived)
        print(f"make-profile: wrote {args.output} ({source} + {', '.join(IO_URING_SYSCALLS)})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
