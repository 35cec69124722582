"""conditional.select: RFC 9110's preconditions (§13.1, evaluated in §13.2.2's order) and Range,
on literal request headers, no I/O."""
from __future__ import annotations

from email.utils import formatdate

import pytest

from loopfix.reference_app.conditional import Representation, Selected, entity_tags, http_date_seconds, select

REP = Representation(length=1000, etag='"abc"', last_modified=1_700_000_000)
DATE = formatdate(REP.last_modified, usegmt=True)
EARLIER = formatdate(REP.last_modified - 60, usegmt=True)
LATER = formatdate(REP.last_modified + 60, usegmt=True)


def answer(method: str = "GET", **headers: str) -> Selected:
    given = {name.replace("_", "-").lower(): value for name, value in headers.items()}
    return select(method, lambda name: given.get(name.lower()), REP)


def test_no_conditions_and_no_range_selects_the_whole_file():
    assert answer() == Selected(200, 0, 999)
    assert answer().length == 1000


@pytest.mark.parametrize("value", ['"abc"', 'W/"abc"', '"x", "abc"', "*", ' "x" ,W/"abc" '])
def test_if_none_match_with_our_tag_weakly_compared_or_star_is_304(value):
    assert answer(If_None_Match=value).status == 304
    assert answer("HEAD", If_None_Match=value).status == 304


@pytest.mark.parametrize("value", ['"abd"', 'W/"x"', "abc", '"abc'])
def test_if_none_match_without_our_tag_sends_the_file(value):
    assert answer(If_None_Match=value).status == 200


def test_if_modified_since_not_modified_is_304_and_modified_sends_the_file():
    assert answer(If_Modified_Since=DATE).status == 304
    assert answer(If_Modified_Since=LATER).status == 304
    assert answer(If_Modified_Since=EARLIER).status == 200
    assert answer(If_Modified_Since="not a date").status == 200  # an invalid date is ignored


def test_if_none_match_takes_precedence_over_if_modified_since():
    assert answer(If_None_Match='"other"', If_Modified_Since=LATER).status == 200


@pytest.mark.parametrize("value, status", [('"abc"', 200), ("*", 200), ('"x", "abc"', 200),
                                           ('W/"abc"', 412), ('"x"', 412), ("garbage", 412)])
def test_if_match_is_a_strong_comparison(value, status):
    assert answer(If_Match=value).status == status


def test_if_unmodified_since_fails_only_when_modified_after_it_and_if_match_overrides_it():
    assert answer(If_Unmodified_Since=EARLIER).status == 412
    assert answer(If_Unmodified_Since=DATE).status == 200
    assert answer(If_Match='"abc"', If_Unmodified_Since=EARLIER).status == 200


def test_range_is_honoured_only_while_if_range_names_this_file():
    assert answer(Range="bytes=10-19") == Selected(206, 10, 19)
    assert answer(Range="bytes=10-19", If_Range='"abc"') == Selected(206, 10, 19)
    assert answer(Range="bytes=10-19", If_Range=DATE) == Selected(206, 10, 19)
    assert answer(Range="bytes=10-19", If_Range='"old"') == Selected(200, 0, 999)  # changed: all of it
    assert answer(Range="bytes=10-19", If_Range='W/"abc"') == Selected(200, 0, 999)  # weak never matches
    assert answer(Range="bytes=10-19", If_Range=EARLIER) == Selected(200, 0, 999)


def test_range_applies_to_get_only_and_unsatisfiable_ranges_are_416():
    assert answer("HEAD", Range="bytes=10-19") == Selected(200, 0, 999)
    assert answer(Range="bytes=1000-").status == 416
    assert answer(Range="bytes=5-1").status == 416
    assert answer(Range="items=1-2") == Selected(200, 0, 999)


def test_a_304_wins_over_a_range():
    assert answer(Range="bytes=10-19", If_None_Match='"abc"').status == 304


def test_entity_tag_lists_and_http_dates_parse_as_the_rfc_writes_them():
    assert entity_tags('"a", W/"b",  "c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert entity_tags("*") == []
    assert entity_tags('"a" "b"') is None and entity_tags("") is None
    assert http_date_seconds(DATE) == REP.last_modified
    assert http_date_seconds("Tuesday, 14-Nov-23 22:13:20 GMT") == REP.last_modified  # RFC 850
    assert http_date_seconds("Tue Nov 14 22:13:20 2023") == REP.last_modified  # asctime
    assert http_date_seconds("yesterday") is None and http_date_seconds(None) is None
