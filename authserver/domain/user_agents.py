"""User-agent families: "Firefox on macOS", "BankApp on iOS" (version numbers ignored).

Binding a refresh token to the user-agent *family* rather than the exact string means a
browser or app update does not sign people out, while a token replayed from a different
browser or operating system is noticed. Also used for readable device labels.
"""

from __future__ import annotations

import re

_BROWSERS = (  # order matters: Edge and Opera also say "Chrome", Chrome also says "Safari"
    ("Edge", re.compile(r"\bEdg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"\b(?:OPR|Opera)/")),
    ("Samsung Internet", re.compile(r"\bSamsungBrowser/")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:HeadlessChrome|Chrome|CriOS|Chromium)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/")),
)
_OSES = (
    ("iOS", re.compile(r"\b(?:iPhone|iPad|iPod|iOS)\b", re.I)),
    ("Android", re.compile(r"\bAndroid\b", re.I)),
    ("Windows", re.compile(r"\bWindows\b", re.I)),
    ("ChromeOS", re.compile(r"\bCrOS\b")),
    ("macOS", re.compile(r"\b(?:Macintosh|Mac OS X|macOS)\b", re.I)),
    # Apple's networking stack ("App/1 CFNetwork/1410 Darwin/22.6.0") names no platform.
    ("iOS or macOS", re.compile(r"\bDarwin/", re.I)),
    ("Linux", re.compile(r"\bLinux\b", re.I)),
)
# "BankApp/3.2.1 (iPhone; iOS 17.1)", "okhttp/4.12.0", "python-requests/2.32"
_PRODUCT = re.compile(r"^([A-Za-z][A-Za-z0-9 ._-]{0,40}?)/[\w.\-]+")
_GENERIC = {"Mozilla"}


def operating_system(user_agent: str) -> str | None:
    for name, pattern in _OSES:
        if pattern.search(user_agent):
            return name
    return None


def application(user_agent: str) -> str | None:
    """The browser or app name, without its version."""
    for name, pattern in _BROWSERS:
        if pattern.search(user_agent):
            return name
    match = _PRODUCT.match(user_agent.strip())
    if match and match.group(1) not in _GENERIC:
        return match.group(1).strip()
    return None


def family(user_agent: str | None) -> str:
    """A stable, version-free label such as "Firefox on macOS"; "Unknown device" if empty."""
    if not user_agent or not user_agent.strip():
        return "Unknown device"
    ua = user_agent[:512]
    app, os_name = application(ua), operating_system(ua)
    if app and os_name:
        return f"{app} on {os_name}"
    return app or (f"Browser on {os_name}" if os_name else "Unknown device")
