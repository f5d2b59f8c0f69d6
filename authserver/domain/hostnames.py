"""Host names a registration may name: ASCII only, international names in their IDNA
A-label (``xn--``) form, and no label that mixes scripts (docs/design.md, "Hardening").

A browser shows ``https://xn--pple-43d.example/`` (``apple`` with a Cyrillic first letter)
like the Latin name and sends the code there: a redirect URI an admin reviewed by eye
must say which name it is. So a Unicode host is refused with the A-label to register
instead, and an A-label must decode to a valid IDNA 2008 label (the ``idna`` package;
Python's own ``idna`` codec is IDNA 2003) whose letters come from one script, or from one
of the combinations Unicode's "highly restrictive" level allows (UTS #39 §5.2: Latin with
Han and Japanese kana, with Han and Bopomofo, or with Han and Hangul). A label written
wholly in Cyrillic letters that look like Latin ones under a non-Cyrillic top-level domain
is refused too, as Chromium does; other whole-script look-alikes are not detected.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

import idna

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# UTS #39 §5.2 "highly restrictive": one script, or Latin with one of these sets.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# Cyrillic letters that look like Latin ones (Chromium's IDN spoof checker's list).
_CYRILLIC_LOOKALIKES = frozenset(
    "\u0430\u0441\u0501\u0435\u04bb\u0456\u0458\u04cf\u043e\u0440\u051b\u0455\u051d"
    "\u0445\u0443\u044a\u044c\u04bd\u043f\u0433\u0475\u0461\u050d")
# Name prefixes of letters that belong to no one script (or to several).
_COMMON = ("MODIFIER", "KATAKANA-HIRAGANA", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH")


class HostError(ValueError):
    """Why a host is refused: one sentence, to follow the URI in a message."""


def _script(char: str) -> str | None:
    """The script of a letter, by the first word of its Unicode name; None for what is no
    letter (digits, hyphens, combining marks) or is shared by scripts."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    if not name or name.startswith(_COMMON):
        return None
    if name.startswith("CJK "):
        return "HAN"
    return name.split(" ", 1)[0]


def scripts(label: str) -> set[str]:
    return {s for s in map(_script, label) if s is not None}


def mixes_scripts(label: str) -> bool:
    """Letters of more than one script, beyond the combinations UTS #39 allows."""
    found = scripts(label)
    return len(found) > 1 and not any(found <= mix for mix in _ALLOWED_MIXES)


def _named(found: set[str]) -> str:
    return " and ".join(sorted(s.title() for s in found))


def _latin_lookalike(label: str, tld: str) -> bool:
    """Wholly Cyrillic letters that each look like a Latin one, under a top-level domain
    that is not itself international (a Cyrillic name under ``.рф`` is what it says)."""
    letters = [c for c in label if unicodedata.category(c).startswith("L")]
    return (bool(letters) and not tld.startswith("xn--") and scripts(label) == {"CYRILLIC"}
            and all(c in _CYRILLIC_LOOKALIKES for c in letters))


def check_host(host: str, bracketed: bool = False) -> None:
    """Raise :class:`HostError` unless ``host`` (as ``urlsplit`` gives it: lowercase, no
    brackets) is an IPv6 literal (``bracketed``) or dot-separated ASCII DNS labels (IPv4
    addresses included), whose ``xn--`` labels are valid, single-script A-labels."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HostError("has an invalid IPv6 address") from None
        return
    if not host.isascii():
        _refuse_unicode(host)
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in host.split(".")):
        raise HostError("must name a host by DNS name or IP address")
    labels = host.split(".")
    for label in labels:
        if label.startswith("xn--"):
            try:
                decoded = idna.ulabel(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                raise HostError(f"has {label[:63]!r}, which is not a valid IDNA A-label") \
                    from None
            if mixes_scripts(decoded):
                raise HostError(f"has {label[:63]!r} ({decoded!r}), which mixes the "
                                f"{_named(scripts(decoded))} scripts (a look-alike of "
                                "another name)")
            if _latin_lookalike(decoded, labels[-1]):
                raise HostError(f"has {label[:63]!r} ({decoded!r}), written in Cyrillic "
                                "letters that look like Latin ones (a look-alike of another "
                                "name)")


def _refuse_unicode(host: str) -> None:
    """A Unicode host: always refused; the message says which A-label form to use, when
    there is a valid one."""
    try:
        a_label = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise HostError("has a host that is not a valid international domain name (IDNA "
                        "2008); hosts must be ASCII") from None
    try:
        check_host(a_label)
    except HostError as exc:
        raise HostError(f"has a non-ASCII host, and its A-label form {a_label!r} is "
                        f"refused too: it {exc}") from None
    raise HostError(f"has a non-ASCII host: register its IDNA A-label form {a_label!r} "
                    "instead")
