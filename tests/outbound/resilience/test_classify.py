"""The one classifier: flags, outlier categories, local replies, gRPC status in headers."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from pymesh.outbound.resilience.classify import (
    LOCAL_REPLIES,
    ErrorKind,
    Outcome,
    OutlierCategory,
    classified_headers,
    classify,
)


@pytest.mark.parametrize(
    ("error", "flag", "category", "status"),
    [
        ("connect-failure", "UF", "local-origin", 503),
        ("reset", "UC", "local-origin", 503),
        ("refused-stream", "UR", "local-origin", 503),
        ("timeout", "UT", "local-origin", 504),
        ("overflow", "UO", "ignored", 503),
    ],
)
def test_errors_carry_envoy_flags_and_local_replies(error: ErrorKind, flag: str, category: OutlierCategory,
                                                    status: int) -> None:
    outcome = classify(None, None, error)
    assert (outcome.error, outcome.flag, outcome.outlier, outcome.status) == (error, flag, category, None)
    assert not outcome.success
    assert outcome.reply is not None
    assert outcome.reply[0] == status
    assert outcome.reply == LOCAL_REPLIES[flag]


def test_local_reply_bodies_are_envoys() -> None:
    assert classify(None, None, "timeout").reply == (504, b"upstream request timeout")
    reply = classify(None, None, "overflow").reply
    assert reply is not None
    assert reply[1].startswith(b"upstream connect error or disconnect/reset before headers. reset reason: ")
    assert reply[1].endswith(b"overflow")


@pytest.mark.parametrize(
    ("status", "category"),
    [(200, "ok"), (204, "ok"), (404, "ok"), (409, "ok"), (499, "ok"), (500, "5xx"), (501, "5xx"),
     (502, "gateway-error"), (503, "gateway-error"), (504, "gateway-error"), (505, "5xx"), (599, "5xx")],
)
def test_responses_by_status(status: int, category: OutlierCategory) -> None:
    outcome = classify(status, {}, None)
    assert (outcome.status, outcome.error, outcome.flag, outcome.outlier) == (status, None, "", category)
    assert outcome.success is (category == "ok")
    assert outcome.reply is None


def test_plain_responses_share_one_outcome_per_status() -> None:
    assert classify(200, {"content-type": "text/plain"}, None) is classify(200, None, None)


def test_grpc_status_in_headers_is_judged_by_envoys_http_mapping() -> None:
    unavailable = classify(200, {"grpc-status": "14"}, None)
    assert unavailable.grpc_status == 14
    assert unavailable.outlier == "gateway-error"  # 14 -> 503
    assert not unavailable.success
    assert classify(200, {"grpc-status": "13"}, None).outlier == "5xx"  # INTERNAL -> 500
    assert classify(200, {"grpc-status": "4"}, None).outlier == "gateway-error"  # DEADLINE_EXCEEDED -> 504
    assert classify(200, {"grpc-status": "5"}, None).outlier == "ok"  # NOT_FOUND -> 404
    assert classify(200, {"grpc-status": "0"}, None).success
    # A 5xx HTTP status is judged by itself, as Envoy's router does.
    assert classify(500, {"grpc-status": "14"}, None).outlier == "5xx"
    assert classify(200, {"grpc-status": "junk"}, None).grpc_status is None


def test_ratelimited_header_is_noted() -> None:
    outcome = classify(429, {"x-envoy-ratelimited": "true"}, None)
    assert outcome.ratelimited
    assert outcome.outlier == "ok"


def test_case_insensitive_headers_work() -> None:
    outcome = classify(200, httpx.Headers({"Grpc-Status": "14"}), None)
    assert outcome.grpc_status == 14


def test_outcome_is_frozen_and_needs_a_status_or_an_error() -> None:
    outcome = classify(200, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.status = 500  # type: ignore[misc]
    with pytest.raises(ValueError, match="status or an error"):
        classify(None, None, None)
    assert Outcome(200, None, "", "ok") == classify(200, None, None)


def test_classified_headers_picks_what_classify_reads_from_raw_pairs() -> None:
    assert classified_headers([(b"content-type", b"text/plain"), (b"content-length", b"5")]) is None
    raw = [(b"Content-Type", b"application/grpc"), (b"Grpc-Status", b"14"), (b"x-envoy-ratelimited", b"true")]
    picked = classified_headers(raw)
    assert picked == {"grpc-status": "14", "x-envoy-ratelimited": "true"}
    outcome = classify(200, picked, None)
    assert (outcome.grpc_status, outcome.ratelimited) == (14, True)
