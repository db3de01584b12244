"""Security commands: login/logout, MFA enrolment, users, the audit log's proofs, policies.

``audit verify`` and ``audit proof`` check signatures on this machine against the verifier key in
``<home>/keys/audit.vkey`` when it is there (the key the server created), so a server that lies
about a checkpoint is caught; elsewhere they trust the key the server serves and say so.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from modelplane.core.errors import ModelplaneError

out = Console(width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)
T = TypeVar("T")

users_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)
mfa_app = typer.Typer(help="Second factor (TOTP) for your account.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
policies_app = typer.Typer(help="The Cedar policy set (admins).", no_args_is_help=True)


def _fail(message: str, hint: str = "", code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}" + (f" [dim]({hint})[/dim]" if hint else ""), highlight=False)
    return typer.Exit(code)


def _guard(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ModelplaneError as exc:
        raise _fail(exc.message, exc.hint) from None


def _settings() -> Any:
    from modelplane.settings import Settings

    return Settings()


def _client() -> Any:
    from modelplane.client import Client

    return Client.from_settings(_settings())


# ------------------------------------------------------------------ login / logout
def login(
    name: Annotated[str, typer.Argument(help="your user name")],
    password: Annotated[str | None, typer.Option(help="prompted for when left out")] = None,
    totp: Annotated[str | None, typer.Option("--totp", help="current TOTP code; prompted for when left out")] = None,
) -> None:
    """Log in: password and TOTP code -> tokens saved in <home>/credentials (mode 0600)."""
    from modelplane.client import read_credentials, write_credentials

    settings = _settings()
    if password is None:
        password = typer.prompt("password", hide_input=True)
    if totp is None:
        totp = typer.prompt("TOTP code (empty if you have not enrolled one)", default="", show_default=False)
    body: dict[str, Any] = {"name": name, "password": password}
    if totp:
        body["totp_code"] = totp.strip()
    res = _guard(_client().post, "/auth/login", json=body)
    path = settings.home / "credentials"
    data = read_credentials(path)
    data.setdefault("api_url", settings.resolved_api_url)
    data.update(access_token=res["access_token"], refresh_token=res["refresh_token"], user=name)
    write_credentials(path, data)
    p = res["principal"]
    out.print(f"logged in as {p['name']} (team {p['team']}, role {p['role']}"
              f"{', MFA' if p['mfa'] else ''}); session saved in {path}")


def logout() -> None:
    """Revoke this session's tokens and forget them."""
    from modelplane.client import read_credentials, write_credentials

    path = _settings().home / "credentials"
    data = read_credentials(path)
    if not data.get("access_token"):
        raise _fail("not logged in", "log in with 'modelplane login NAME'")
    try:
        _client().post("/auth/logout", json={"refresh_token": data.get("refresh_token", "")})
    except ModelplaneError as exc:  # an expired session is gone anyway; forget it locally
        err.print(f"[yellow]note:[/yellow] the server said: {exc.message}")
    for k in ("access_token", "refresh_token", "user"):
        data.pop(k, None)
    write_credentials(path, data)
    out.print("logged out")


# ------------------------------------------------------------------ users and MFA
@users_app.command("create")
def users_create(
    name: str,
    team: Annotated[str, typer.Option(help="the user's team (created if missing)")],
    role: Annotated[str, typer.Option(help="admin, member or auditor")] = "member",
    password: Annotated[str | None, typer.Option(help="prompted for when left out")] = None,
) -> None:
    """Create a user (admins only)."""
    c = _client()
    if password is None:
        password = typer.prompt("password for the new user", hide_input=True, confirmation_prompt=True)
    try:
        c.post("/teams", json={"name": team})
    except ModelplaneError as exc:
        if getattr(exc, "status_code", 0) != 409:
            raise _fail(exc.message, exc.hint) from None
    res = _guard(c.post, "/users", json={"name": name, "team": team, "role": role, "password": password})
    out.print(f"created user {res['name']} (team {res['team']}, role {res['role']})")


@mfa_app.command("enroll")
def mfa_enroll(code: Annotated[str | None, typer.Option(help="a current code; prompted for")] = None) -> None:
    """Enrol a TOTP authenticator for the logged-in user."""
    c = _client()
    res = _guard(c.post, "/auth/mfa/enroll")
    out.print(f"secret: {res['secret']}\nURI (scan it as a QR code): {res['uri']}")
    if code is None:
        code = typer.prompt("current code from your authenticator")
    _guard(c.post, "/auth/mfa/confirm", json={"code": code.strip()})
    out.print("TOTP enrolled: from now on 'modelplane login' asks for a code")


# ------------------------------------------------------------------ audit
def _pinned_verifier(served: str) -> tuple[Any, str]:
    from modelplane.security.audit.note import NoteVerifier

    pinned = _settings().home / "keys" / "audit.vkey"
    if pinned.is_file():
        key = pinned.read_text().strip()
        if key != served:
            raise _fail("the server's audit key differs from the one pinned in " + str(pinned),
                        "someone may be impersonating the log; do not trust its checkpoints", code=1)
        return NoteVerifier.from_vkey(key), f"pinned key {pinned}"
    return NoteVerifier.from_vkey(served), "the key the server served (no local pin)"


def _checkpoint(c: Any) -> tuple[Any, str, str]:
    from modelplane.security.audit.note import open_checkpoint

    res = _guard(c.get, "/audit/checkpoint")
    verifier, how = _pinned_verifier(res["verifier_key"])
    cp = _guard(open_checkpoint, res["note"], [verifier], res["origin"])
    return cp, res["note"], how


@audit_app.command("verify")
def audit_verify() -> None:
    """Re-derive every entry hash and signed checkpoint; exit 1 naming the first bad entry."""
    c = _client()
    report = _guard(c.post, "/audit/verify")
    if not report["ok"]:
        where = report["first_bad_index"]
        err.print(f"[red]audit log FAILED verification[/red] at entry {where}: {report['problem']}", highlight=False)
        raise typer.Exit(1)
    cp, _, how = _checkpoint(c)
    seen = _check_against_last_seen(c, cp)
    out.print(f"audit log OK: {report['entries_checked']} entries, {report['checkpoints_checked']} signed "
              f"checkpoints re-derived, {report['pruned']} pruned; latest checkpoint size {cp.size} "
              f"verified with {how}{seen}")


def _check_against_last_seen(c: Any, cp: Any) -> str:
    """The log must extend the checkpoint this machine saw last (a consistency proof), never rewrite it;
    then remember the new one in the credentials file."""
    from modelplane.client import read_credentials, write_credentials
    from modelplane.security.audit.merkle import verify_consistency

    path = _settings().home / "credentials"
    data = read_credentials(path)
    last = data.get("audit_checkpoint") or {}
    note = ""
    if last and 0 < int(last["size"]) <= cp.size:
        old_root = base64.b64decode(last["root_hash"])
        if int(last["size"]) == cp.size:
            if old_root != cp.root_hash:
                raise _fail(f"the log at size {cp.size} has a different root than this machine saw",
                            "the log was rewritten; keep the evidence", code=1)
        else:
            res = _guard(c.get, "/audit/proof/consistency", params={"old": last["size"], "new": cp.size})
            try:
                verify_consistency(int(last["size"]), cp.size, [base64.b64decode(h) for h in res["proof"]],
                                   old_root, cp.root_hash)
            except ModelplaneError as exc:
                raise _fail(f"the log does not extend the checkpoint of size {last['size']} seen before: "
                            f"{exc.message}", "the log was rewritten; keep the evidence", code=1) from None
        note = f"; consistent with the checkpoint of size {last['size']} seen before"
    elif last and int(last["size"]) > cp.size:
        raise _fail(f"the log shrank from {last['size']} to {cp.size} entries", "entries were removed", code=1)
    if path.is_file():
        data["audit_checkpoint"] = {"size": cp.size, "root_hash": base64.b64encode(cp.root_hash).decode()}
        write_credentials(path, data)
    return note


@audit_app.command("proof")
def audit_proof(index: int) -> None:
    """Print entry INDEX with its inclusion proof and verify both here against the signed checkpoint."""
    from modelplane.security.audit.entry import AuditEntry
    from modelplane.security.audit.merkle import leaf_hash, verify_inclusion

    c = _client()
    cp, note, how = _checkpoint(c)
    res = _guard(c.get, "/audit/proof/inclusion", params={"index": index, "size": cp.size})
    leaf = base64.b64decode(res["leaf_hash"])
    entry = res["entry"]
    if entry is not None:
        body = AuditEntry(entry["operator"], entry["operation"], entry["resource"], float(entry["timestamp"]),
                          entry["outcome"], entry["request_id"], entry.get("details", {})).canonical(index)
        if leaf_hash(body) != leaf:
            raise _fail(f"entry {index}'s body does not hash to its leaf", "the log was altered", code=1)
    proof = [base64.b64decode(h) for h in res["proof"]]
    _guard(verify_inclusion, index, cp.size, leaf, proof, cp.root_hash)
    out.print(f"entry {index}: {entry if entry is not None else '(pruned; hash kept)'}")
    out.print(f"leaf hash {res['leaf_hash']}")
    for k, h in enumerate(res["proof"]):
        out.print(f"  proof[{k}] {h}")
    out.print(f"included in the tree of {cp.size} entries (root {base64.b64encode(cp.root_hash).decode()}), "
              f"checkpoint signature verified with {how}")
    out.print(note, end="", highlight=False)


# ------------------------------------------------------------------ policies
@policies_app.command("get")
def policies_get() -> None:
    """Print the active policy set (its version goes to stderr)."""
    res = _guard(_client().get, "/policies")
    err.print(f"policy version {res['version']} by {res['author']}")
    sys.stdout.write(res["text"])


@policies_app.command("set")
def policies_set(
    file: Annotated[Path, typer.Option("-f", "--file", help="the whole Cedar policy set")],
    expected_version: Annotated[int | None, typer.Option(help="the version you edited (default: current)")] = None,
) -> None:
    """Replace the policy set with FILE (validated; refused if someone changed it meanwhile)."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}", "check the file path") from None
    c = _client()
    if expected_version is None:
        expected_version = _guard(c.get, "/policies")["version"]
    res = _guard(c.put, "/policies", json={"text": text, "expected_version": expected_version})
    out.print(f"policy set is now version {res['version']}")


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(users_app, name="users")
    app.add_typer(mfa_app, name="mfa")
    app.add_typer(audit_app, name="audit")
    app.add_typer(policies_app, name="policies")
