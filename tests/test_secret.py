"""Secrets as qemu's --object spells them, a password file, or a prompt."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from qcow2kit.secret import ON_COMMAND_LINE, SecretError, parse_object, resolve


def test_parse_like_qemu(tmp_path: Path) -> None:
    assert parse_object("secret,id=s0,data=a,,b").value() == b"a,b"
    assert parse_object("secret,id=s0,data=cXdlcnR5,format=base64").value() == b"qwerty"
    (tmp_path / "pw").write_bytes(b"from-file")
    assert parse_object(f"secret,id=s0,file={tmp_path / 'pw'}").value() == b"from-file"


@pytest.mark.parametrize("text, problem", [
    ("secret,id=s0", "needs id= and one of data= or file="),
    ("secret,data=x", "needs id= and one of data= or file="),
    ("secret,id=s0,data=x,file=y", "needs id= and one of data= or file="),
    ("secret,id=s0,data=x,color=red", "unknown secret property 'color'"),
    ("secret,id=s0,data=x,format=hex", "unknown secret format 'hex'"),
    ("secret,id=s0,data=!!,format=base64", "secret 's0' is not valid base64"),
    ("secret,id=s0,data=x,keyid=k,iv=v", "encrypted secrets"),
    ("iothread,id=io0", "only secret objects are supported, not 'iothread'"),
])
def test_malformed_objects(text: str, problem: str) -> None:
    with pytest.raises(SecretError) as caught:
        parse_object(text).value()
    assert problem in str(caught.value)


def test_resolution_order(tmp_path: Path) -> None:
    warnings: List[str] = []
    pw = tmp_path / "pw"
    pw.write_bytes(b"line one\nline two\n")
    objects = ["secret,id=a,data=AAA", f"secret,id=b,file={pw}"]
    assert resolve(objects, "b", None, "x.qcow2", warnings.append) == b"line one\nline two\n"
    assert warnings == [ON_COMMAND_LINE]  # data= was on the command line
    with pytest.raises(SecretError, match="--key-secret ID names the one"):
        resolve(objects, None, None, "x.qcow2", warnings.append)
    with pytest.raises(SecretError, match="no secret object has the id 'c'"):
        resolve(objects, "c", None, "x.qcow2", warnings.append)
    warnings.clear()
    assert resolve([], None, str(pw), "x.qcow2", warnings.append) == b"line one"
    assert resolve([], None, None, "x.qcow2", warnings.append,
                   prompt=lambda text: "typed" if text == "Password for x.qcow2: " else "") \
        == b"typed"
    assert warnings == []


def test_no_source_off_a_terminal() -> None:
    with pytest.raises(SecretError) as caught:
        resolve([], None, None, "x.qcow2", lambda w: None)
    assert str(caught.value) == ("secret: the image is encrypted: give its secret with "
                                 "--password-file FILE or --object secret,id=ID,file=FILE "
                                 "(or run on a terminal)")
