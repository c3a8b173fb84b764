"""`cistern accounts`: the broker's accounts provisioned in bulk from the registry. One account per meter and pump
room, named after the device (the ACL lets it publish only its own readings and events), plus the service accounts
the ACL names. New passwords are written once to a credentials file for the installers; the Mosquitto password
file is replaced atomically and the broker is told once (SIGHUP) to re-read it."""

from __future__ import annotations

import argparse
import base64
import csv
import grp
import hashlib
import os
import secrets
import signal
import sys
from pathlib import Path

from devices.registry import Registry
from ingest.config import add_setting_flags, load_settings

# Everything below this line in the password file is Cistern's to rewrite; every line above it is kept as it is.
MARKER = "# cistern accounts: device accounts from the registry below; `cistern accounts` rewrites this part"
SERVICE_ACCOUNTS = ("cistern-ingest", "dispatch")  # the accounts deploy/mosquitto.acl names
# Mosquitto 2's own password format (what mosquitto_passwd writes): PBKDF2-HMAC-SHA512, 101 rounds, 12-byte salt.
ROUNDS, SALT_BYTES, HASH_BYTES = 101, 12, 64


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ROUNDS, HASH_BYTES)
    return f"$7${ROUNDS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-file", type=Path, default=Path("/etc/mosquitto/cistern/passwd"),
                        help="Mosquitto's password file (default /etc/mosquitto/cistern/passwd); created if missing")
    parser.add_argument("--credentials", type=Path, default=None,
                        help="CSV file to write the new accounts' passwords to (account,password; mode 0600; must "
                             "not exist yet): hand it to the installers, then keep it safe or destroy it")
    parser.add_argument("--passwords", type=Path, default=None,
                        help="CSV of passwords already set in devices (device_id,password): used for their new "
                             "accounts instead of generated ones")
    parser.add_argument("--service", action="append", default=None, metavar="NAME",
                        help=f"a service account to have (repeat; default: {', '.join(SERVICE_ACCOUNTS)})")
    parser.add_argument("--revoke-unregistered", action="store_true",
                        help="remove the device accounts of devices no longer in the registry (by default they are "
                             "listed and kept)")
    parser.add_argument("--broker-pid-file", type=Path, default=Path("/run/mosquitto/mosquitto.pid"),
                        help="the broker's pid file: it gets one SIGHUP to re-read the accounts "
                             "(default /run/mosquitto/mosquitto.pid, Debian's)")
    parser.add_argument("--no-reload", action="store_true", help="do not signal the broker")
    add_setting_flags(parser)


def _read(path: Path) -> tuple[list[str], dict[str, str]]:
    """The password file as (lines above the marker, kept verbatim; device account -> its line below it)."""
    if not path.exists():
        return [], {}
    head: list[str] = []
    devices: dict[str, str] = {}
    below = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == MARKER:
            below = True
        elif below and line and not line.startswith("#"):
            devices[line.split(":", 1)[0]] = line
        elif not below:
            head.append(line)
    return head, devices


def _names(lines: list[str]) -> set[str]:
    return {x.split(":", 1)[0] for x in lines if x and not x.startswith("#")}


def _known_passwords(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return {row[0].strip(): row[1] for row in csv.reader(fh) if len(row) >= 2 and row[0].strip()}


def _write_password_file(path: Path, lines: list[str]) -> None:
    """Atomically, keeping the old file's owner and mode (a new one: 0640, group mosquitto where it exists: the
    broker reads it after dropping to that user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.cistern-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        st = path.stat()
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o777
    else:
        uid, gid, mode = -1, -1, 0o640
        try:
            gid = grp.getgrnam("mosquitto").gr_gid
        except KeyError:
            pass
    try:
        os.chown(tmp, uid, gid)
    except PermissionError:
        print(f"cistern accounts: could not give {path} its owner and group back (run as root)", file=sys.stderr)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_credentials(path: Path, rows: list[tuple[str, str]]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["account", "password"])
        w.writerows(rows)


def _reload_broker(pid_file: Path) -> str:
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGHUP)
    return f"broker told to re-read its accounts (SIGHUP to pid {pid})"


def main(args: argparse.Namespace) -> int:
    registry = Registry.load(load_settings(args).registry)
    devices = sorted([*registry.meters.ids.tolist(), *registry.rooms.ids.tolist()])
    services = args.service or list(SERVICE_ACCOUNTS)
    clash = sorted(set(devices) & set(services))
    if clash:
        print(f"cistern accounts: device id {clash[0]!r} is also a service account's name: rename the device in the "
              f"registry", file=sys.stderr)
        return 2
    head, below = _read(args.password_file)
    known = _known_passwords(args.passwords)
    generated: list[tuple[str, str]] = []

    def new_line(name: str) -> str:
        password = known.get(name)
        if password is None:
            password = secrets.token_urlsafe(18)
            generated.append((name, password))
        return f"{name}:{hash_password(password)}"

    have = _names(head)
    head = head + [new_line(n) for n in services if n not in have]
    registered = set(devices)
    kept = {n: line for n, line in below.items() if n in registered}
    added = [n for n in devices if n not in have and n not in kept]
    device_lines = {**kept, **{n: new_line(n) for n in added}}
    gone = sorted(n for n in below if n not in registered)
    if not args.revoke_unregistered:
        device_lines.update({n: below[n] for n in gone})
    if generated and args.credentials is None:
        print(f"cistern accounts: {len(generated)} new account(s) need a password the devices must be given: name a "
              f"file for them with --credentials FILE (or give known ones with --passwords FILE); nothing changed",
              file=sys.stderr)
        return 2
    if args.credentials is not None and args.credentials.exists() and generated:
        print(f"cistern accounts: {args.credentials} exists (it may hold passwords not handed over yet): move it "
              f"away or name another file; nothing changed", file=sys.stderr)
        return 2
    lines = [*head, MARKER, *(device_lines[n] for n in sorted(device_lines))]
    before = args.password_file.read_text(encoding="utf-8") if args.password_file.exists() else None
    changed = before != "\n".join(lines) + "\n"
    summary = (f"{len(devices)} devices in the registry: {len(added)} account(s) added, {len(kept)} kept"
               + (f", {len(gone)} of devices no longer registered "
                  + ("revoked" if args.revoke_unregistered else "kept (--revoke-unregistered removes them)")
                  if gone else ""))
    if not changed:
        print(f"cistern accounts: {summary}; {args.password_file} unchanged", file=sys.stderr)
        return 0
    if generated:
        _write_credentials(args.credentials, generated)
        summary += f"; {len(generated)} new password(s) in {args.credentials}"
    _write_password_file(args.password_file, lines)
    print(f"cistern accounts: {summary}; {args.password_file} written", file=sys.stderr)
    if args.no_reload:
        return 0
    try:
        print(f"cistern accounts: {_reload_broker(args.broker_pid_file)}", file=sys.stderr)
    except (OSError, ValueError) as e:
        print(f"cistern accounts: the broker was not told ({args.broker_pid_file}: {e}); run `systemctl reload "
              f"mosquitto` for the new accounts to work", file=sys.stderr)
        return 1
    return 0
