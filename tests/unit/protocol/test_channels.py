"""Channel name rules (ringcast's own; see ringcast.server.protocol.channels)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringcast.errors import ChannelNameError, RingcastError
from ringcast.server.protocol import validate_channel

ALPHABET = string.ascii_letters + string.digits + "_-.:@"


class TestChannelNames:
    @pytest.mark.parametrize("name", ["news", "a", "user:42", "room.7@eu-1", "A_b-C", "0"])
    def test_valid_names_are_returned(self, name: str) -> None:
        assert validate_channel(name, 128) == name

    def test_max_length_is_inclusive(self) -> None:
        assert validate_channel("x" * 128, 128) == "x" * 128

    def test_empty_name(self) -> None:
        with pytest.raises(ChannelNameError, match="channel name is empty"):
            validate_channel("", 128)

    def test_too_long_name_says_measured_and_allowed(self) -> None:
        with pytest.raises(ChannelNameError) as info:
            validate_channel("x" * 200, 128)
        assert str(info.value) == "channel name is 200 characters, at most 128 allowed"

    def test_bad_character_says_which_where_and_what_is_allowed(self) -> None:
        with pytest.raises(ChannelNameError) as info:
            validate_channel("foo/bar", 128)
        assert str(info.value) == (
            "channel name 'foo/bar': character '/' at position 3 is not allowed; "
            "use A-Z a-z 0-9 _ - . : @"
        )

    @pytest.mark.parametrize(
        ("name", "char", "position"),
        [("caf%C3%A9", "%", 3), ("café", "é", 3), ("a b", " ", 1), ("x\n", "\n", 1)],
    )
    def test_no_decoding_and_no_other_characters(self, name: str, char: str, position: int) -> None:
        with pytest.raises(ChannelNameError, match=f"at position {position} "):
            validate_channel(name, 128)

    def test_error_is_part_of_the_ringcast_tree(self) -> None:
        with pytest.raises(RingcastError):
            validate_channel("", 5)
        with pytest.raises(ValueError):
            validate_channel("", 5)

    @given(st.text(ALPHABET, min_size=1, max_size=64))
    def test_any_name_from_the_alphabet_is_valid(self, name: str) -> None:
        assert validate_channel(name, 64) == name

    @given(st.text(ALPHABET, max_size=20), st.characters(), st.text(max_size=20))
    def test_the_first_bad_character_is_reported(self, head: str, bad: str, tail: str) -> None:
        name = head + bad + tail
        if bad in ALPHABET:
            return
        with pytest.raises(ChannelNameError) as info:
            validate_channel(name, 100)
        assert f"character {bad!r} at position {len(head)} is not allowed" in str(info.value)
