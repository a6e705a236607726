"""Where the secret of an encrypted image comes from, in qemu's words.

qemu takes `--object secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]` and the
image's `encrypt.key-secret=ID`; qcow2kit takes the same objects with `--key-secret ID`
(or the one secret object given), a plain `--password-file FILE`, or asks on the
terminal. A secret given as data on the command line is visible to every user of the
machine (ps, /proc): it is accepted with a warning. Secrets are never printed.
"""
from __future__ import annotations

import base64
import binascii
import getpass
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from .errors import Qcow2Error

ON_COMMAND_LINE = ("a secret given as data= on the command line can be read by other "
                   "users of this machine; prefer file= or --password-file")


class SecretError(Qcow2Error):
    """A secret cannot be had: a malformed object, an unknown id, no source."""

    def __init__(self, problem: str) -> None:
        super().__init__("secret", None, problem)


@dataclass(frozen=True)
class SecretObject:
    """One `secret` object of qemu's --object syntax."""

    id: str
    data: Optional[str] = None
    file: Optional[str] = None
    format: str = "raw"

    def value(self) -> bytes:
        if self.file is not None:
            try:
                with open(self.file, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise SecretError(f"cannot read {self.file}: {exc.strerror}") from None
        else:
            raw = (self.data or "").encode()
        if self.format == "base64":
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise SecretError(f"secret {self.id!r} is not valid base64") from None
        return raw


def parse_object(text: str) -> SecretObject:
    """`secret,id=ID,data=...|file=...[,format=raw|base64]`, as qemu spells it (a comma
    inside a value is written twice)."""
    parts, current, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    if parts[0] != "secret":
        raise SecretError(f"only secret objects are supported, not {parts[0]!r}")
    fields: Dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("id", "data", "file", "format", "keyid", "iv"):
            raise SecretError(f"unknown secret property {key!r}")
        fields[key] = value
    if "keyid" in fields or "iv" in fields:
        raise SecretError("encrypted secrets (keyid=, iv=) are not supported")
    if "id" not in fields or ("data" in fields) == ("file" in fields):
        raise SecretError("a secret object needs id= and one of data= or file=")
    if fields.get("format", "raw") not in ("raw", "base64"):
        raise SecretError(f"unknown secret format {fields['format']!r}")
    return SecretObject(fields["id"], fields.get("data"), fields.get("file"),
                        fields.get("format", "raw"))


def resolve(objects: Sequence[str], key_secret: Optional[str],
            password_file: Optional[str], what: str,
            warn: Callable[[str], None],
            prompt: Optional[Callable[[str], str]] = None) -> bytes:
    """The secret for image what: the object key_secret names (or the only object),
    else the password file's first line, else a prompt on the terminal."""
    parsed = [parse_object(text) for text in objects]
    if any(o.data is not None for o in parsed):
        warn(ON_COMMAND_LINE)
    if parsed or key_secret is not None:
        by_id = {o.id: o for o in parsed}
        if key_secret is None:
            if len(parsed) != 1:
                raise SecretError("several secret objects: --key-secret ID names the one")
            return parsed[0].value()
        if key_secret not in by_id:
            raise SecretError(f"no secret object has the id {key_secret!r}")
        return by_id[key_secret].value()
    if password_file is not None:
        try:
            with open(password_file, "rb") as f:
                return f.read().split(b"\n", 1)[0]
        except OSError as exc:
            raise SecretError(f"cannot read {password_file}: {exc.strerror}") from None
    if prompt is None and sys.stdin is not None and sys.stdin.isatty():
        prompt = getpass.getpass
    if prompt is None:
        raise SecretError("the image is encrypted: give its secret with --password-file "
                          "FILE or --object secret,id=ID,file=FILE (or run on a terminal)")
    return prompt(f"Password for {what}: ").encode()


Secrets = Callable[[str], bytes]  # the secret of the encrypted image of that name


def source(objects: Sequence[str] = (), key_secret: Optional[str] = None,
           password_file: Optional[str] = None,
           warn: Callable[[str], None] = lambda message: None) -> Secrets:
    """The secrets of a chain's encrypted layers, by file name: one secret, found as
    resolve finds it when first asked for, serves every layer."""
    found: List[bytes] = []

    def secrets(filename: str) -> bytes:
        if not found:
            found.append(resolve(objects, key_secret, password_file, filename, warn))
        return found[0]
    return secrets
