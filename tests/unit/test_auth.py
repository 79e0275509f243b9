"""The read API's credential check: only ``Bearer <a configured key>`` is let in, whatever bytes the header holds."""

from __future__ import annotations

import pytest

from app.auth import has_api_key

API_KEYS = ("ak_one", "ak_two")


def test_a_configured_key_is_accepted_whatever_the_case_of_the_scheme() -> None:
    assert has_api_key("Bearer ak_two", API_KEYS)
    assert has_api_key("bearer ak_one", API_KEYS)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Bearer ak_three", "Basic ak_one", "Bearer ak_one "])
def test_anything_else_is_refused(header: str) -> None:
    assert not has_api_key(header, API_KEYS)


@pytest.mark.parametrize("key", ["\udcff", "ak_one\udcff", "\ud800"])
def test_a_key_that_is_not_utf8_is_refused_not_an_error(key: str) -> None:
    """aiohttp and websockets decode header bytes that are not UTF-8 to lone surrogates (``\\xff`` -> ``\\udcff``)."""
    assert not has_api_key(f"Bearer {key}", API_KEYS)


def test_a_configured_key_outside_ascii_still_matches_itself() -> None:
    assert has_api_key("Bearer clé\udcff", ["clé\udcff"])
