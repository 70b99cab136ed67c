"""Path normalization against Istio's own table (tests/integration/security/normalization_test.go)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pymesh.inbound.paths import Mode, Normalized, mode_of, normalize, normalize_host, strip_params
from pymesh.inbound.request import Denial

TABLE: dict[Mode, list[tuple[str, str]]] = {
    "NONE": [
        ("/", "/"), ("/app#foo", "/app"), ("/app/", "/app/"), ("/app/../admin", "/app/../admin"),
        ("/app//", "/app//"), ("/app/%2f", "/app/%2f"), ("/xyz%30..//abc", "/xyz%30..//abc"),
        ("/app/%2E./admin", "/app/%2E./admin"), ("/app\\admin", "/app\\admin"),
        ("/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc"), ("/app//../../admin", "/app//../../admin"),
    ],
    "BASE": [
        ("/", "/"), ("/app#foo", "/app"), ("/app/", "/app/"), ("/app/../admin", "/admin"), ("/app", "/app"),
        ("/app//", "/app//"), ("/app/%2f", "/app/%2f"), ("/app%2f/", "/app%2f/"), ("/xyz%30..//abc", "/xyz0..//abc"),
        ("/app/%2E./admin", "/admin"), ("/app\\admin", "/app/admin"), ("/app/\\/\\/\\admin", "/app//////admin"),
        ("/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc"),
        ("/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc", "/%5Capp%2f%5c%2F..%2fadmin%5c/abc"),
        ("/app//../admin", "/app/admin"), ("/app//../../admin", "/admin"),
    ],
    "MERGE_SLASHES": [
        ("/", "/"), ("/app#foo", "/app"), ("/app/../admin", "/admin"), ("/app//", "/app/"),
        ("/app/%2f", "/app/%2f"), ("/xyz%30..//abc", "/xyz0../abc"), ("/app/%2E./admin", "/admin"),
        ("/app\\admin", "/app/admin"), ("/app/\\/\\/\\admin", "/app/admin"),
        ("/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc"),
        ("/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc", "/%5Capp%2f%5c%2F..%2fadmin%5c/abc"),
        ("/app//../admin", "/app/admin"), ("/app//../../admin", "/admin"),
    ],
    "DECODE_AND_MERGE_SLASHES": [
        ("/", "/"), ("/app#foo", "/app"), ("/app/../admin", "/admin"), ("/app//", "/app/"), ("/app/%2f", "/app/"),
        ("/app%2f/", "/app/"), ("/xyz%30..//abc", "/xyz0../abc"), ("/app/%2E./admin", "/admin"),
        ("/app\\admin", "/app/admin"), ("/app/\\/\\/\\admin", "/app/admin"),
        ("/%2Fapp%5cadmin%5Cabc", "/app/admin/abc"), ("/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc", "/app/admin/abc"),
        ("/app//../admin", "/app/admin"), ("/app//../../admin", "/admin"),
        ("/%c0%2e%c0%2e/admin", "/%c0.%c0./admin"), ("/%c0%2fadmin", "/%c0/admin"),
        # never normalized
        ("/0x2e0x2e/admin", "/0x2e0x2e/admin"), ("/%25c0%25ae%25c0%25ae/admin", "/%25c0%25ae%25c0%25ae/admin"),
        ("/%252e%252e/admin", "/%252e%252e/admin"), ("/%c0%ae%c0%ae/admin", "/%c0%ae%c0%ae/admin"),
        ("/.../admin", "/.../admin"), ("/..../admin", "/..../admin"), ("/..;/admin", "/..;/admin"),
        ("/;/admin", "/;/admin"), ("/admin;a=b", "/admin;a=b"), ("/admin,a=b/xyz", "/admin,a=b/xyz"),
        ("/Admin", "/Admin"), ("/ADMIN", "/ADMIN"),
    ],
}


@pytest.mark.parametrize(("mode", "raw", "expected"), [(m, r, e) for m, rows in TABLE.items() for r, e in rows])
def test_istio_table(mode: Mode, raw: str, expected: str) -> None:
    result = normalize(raw, mode)
    assert isinstance(result, Normalized)
    assert result.path == expected


def _percent_expected(i: int) -> str:
    char = chr(i)
    if char in string.ascii_letters + string.digits + "-._~":
        return "/admin" + char
    if char in "/\\":
        return "/admin/"
    return f"/admin%{i:02x}"


@pytest.mark.parametrize("i", range(1, 256))
def test_every_percent_escape(i: int) -> None:
    result = normalize(f"/admin%{i:02x}", "DECODE_AND_MERGE_SLASHES")
    assert isinstance(result, Normalized)
    assert result.path == _percent_expected(i)


@pytest.mark.parametrize("mode", ["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"])
@pytest.mark.parametrize("raw", ["/admin%00", "/a\x00b", "/a\nb", "admin", "*", "http://x/admin"])
def test_refused(mode: Mode, raw: str) -> None:
    result = normalize(raw, mode)
    assert isinstance(result, Denial)
    assert result.status == 400


def test_query_kept_and_target() -> None:
    result = normalize("/a/../b?x=%2F..&y#frag", "BASE")
    assert isinstance(result, Normalized)
    assert (result.path, result.query, result.target) == ("/b", "x=%2F..&y", "/b?x=%2F..&y")
    assert not result.escaped_slashes
    kept = normalize("/a%2Fb", "BASE")
    assert isinstance(kept, Normalized)
    assert kept.escaped_slashes


def test_raw_non_ascii_is_escaped() -> None:
    result = normalize("/caf\u00e9 x", "BASE")  # latin-1 decoded bytes, as a server hands raw_path over
    assert isinstance(result, Normalized)
    assert result.path == "/caf%E9%20x"


def test_mode_of() -> None:
    assert mode_of("DEFAULT") == "BASE"
    assert mode_of("MERGE_SLASHES") == "MERGE_SLASHES"


def test_strip_params() -> None:
    assert strip_params("/admin;x=y/a;b") == "/admin/a"
    assert strip_params("/public/..;/admin") == "/admin"
    assert strip_params("/plain") == "/plain"


@pytest.mark.parametrize(("authority", "expected"), [
    ("Secret.COM", ("secret.com", None)), ("secret.com.", ("secret.com", None)),
    ("secret.com.:8080", ("secret.com", "8080")), ("[::1]:443", ("[::1]", "443")), ("[::1]", ("[::1]", None)),
    ("10.0.0.1:80", ("10.0.0.1", "80")),
])
def test_normalize_host(authority: str, expected: tuple[str, str | None]) -> None:
    assert normalize_host(authority) == expected


_PATH_CHARS = st.text(alphabet="/.%2Ffe5cC\\;ab=?#", max_size=24)


@settings(max_examples=300, deadline=None)
@given(_PATH_CHARS, st.sampled_from(["BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]))
def test_idempotent(tail: str, mode: Mode) -> None:
    """normalize(normalize(p)) == normalize(p), so what the app receives judges the same again."""
    first = normalize("/" + tail, mode)
    if isinstance(first, Denial):
        return
    again = normalize(first.target, mode)
    assert isinstance(again, Normalized)
    if mode == "DECODE_AND_MERGE_SLASHES" and "%25" in first.path:
        return  # "%252F" decodes once to "%2F": double decoding is not idempotent, by design
    assert again.path == first.path
