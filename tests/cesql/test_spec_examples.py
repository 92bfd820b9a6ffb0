"""The examples the CESQL v1 specification gives, and Subscriptions API filters written in CESQL."""

from __future__ import annotations

import pytest

from tests.cesql._harness import Case, check, params

MISSING = ("missingAttribute",)
_FULL_NAME = (
    "(firstname = 'Francesco' AND lastname = 'Guardiani') OR subject = 'Francesco Guardiani'"
)


@pytest.mark.parametrize(
    "case",
    params(
        # Section 5.
        Case("EXISTS subject", True),
        Case("firstname = 'Francesco'", True, event={"firstname": "Francesco"}),
        Case(
            "firstname = 'Francesco' OR subject = 'Francesco'",
            True,
            event={"subject": "Francesco", "firstname": "Doug"},
        ),
        Case(
            "firstname = 'Francesco' OR subject = 'Francesco'",
            True,
            event={"firstname": "Francesco", "subject": "Doug"},
        ),
        Case(
            _FULL_NAME,
            True,
            event={"subject": "Doug", "firstname": "Francesco", "lastname": "Guardiani"},
        ),
        Case(
            _FULL_NAME,
            True,
            event={"subject": "Francesco Guardiani", "firstname": "Doug", "lastname": "Davis"},
        ),
        Case("sequence = 10", True, event={"sequence": 10}),
        Case("sequence = 10", True, event={"sequence": "10"}),
        Case("hop < ttl", True, event={"hop": 5, "ttl": 10}),
        # Section 2: keywords and function names in any case.
        Case("int(hop) < int(ttl) and int(hop) < 1000", True, event={"hop": "5", "ttl": "10"}),
        Case("INT(hop) < INT(ttl) AND INT(hop) < 1000", True, event={"hop": "5", "ttl": "10"}),
        # Section 3.7.
        Case('TRUE = "true" AND FALSE = "false"', True),
        Case('TRUE = "TRUE" OR FALSE = "FALSE"', False),
        # Section 3.2.
        Case('true AND (missingAttribute = "")', False, MISSING),
        Case("missingattribute * 5", 0, MISSING),
        Case("1 / missingAttribute", 0, MISSING),
        # Section 3.4.3 (its `_b*` example reads `_b%`, as the text around it explains).
        Case(r"'abc%' LIKE 'abc\%'", True),
        Case(r"'abcd' LIKE 'abc\%'", False),
        # Section 3.4.4.
        Case("EXISTS id", True, event={"id": "anything"}),
    ),
)
def test_specification_examples(case: Case) -> None:
    check(case)


_DNF = (
    "(id = 'myId' AND type LIKE '%.success') OR "
    "(id = 'notmyId' AND source LIKE 'http://%' AND type LIKE '%.warning')"
)
_CNF = (
    "(id = 'myId' OR type LIKE '%.success') AND "
    "(id = 'notmyId' OR source LIKE 'https://%' OR type LIKE '%.warning')"
)


@pytest.mark.parametrize(
    "case",
    params(
        Case("source LIKE 'https://%'", True, event={"source": "https://example.com"}),
        Case("myext LIKE 'custom%'", True, event={"myext": "customext"}),
        Case("myext LIKE 'custom%'", False, MISSING),
        Case("myext LIKE '%ext'", True, event={"myext": "customext"}),
        Case("myext LIKE '%ext'", False, MISSING),
        Case("id = 'myId'", True, event={"id": "myId"}),
        Case("id = 'myId'", False, event={"id": "notmyId"}),
        Case("myext = 'customext'", True, event={"myext": "customext"}),
        Case("myext = 'customext'", False, MISSING),
        Case(
            "id LIKE 'my%' AND source LIKE '%.ca'",
            True,
            event={"id": "myId", "source": "http://www.some-website.ca"},
        ),
        Case(
            "id LIKE 'my%' AND source LIKE '%.ca'",
            False,
            event={"id": "myId", "source": "http://www.some-website.com"},
        ),
        Case(
            "myext LIKE 'custom%' AND type LIKE '%.error'",
            True,
            event={"myext": "customext", "type": "com.github.error"},
        ),
        Case(
            "type LIKE 'example.%' AND myext LIKE 'custom%'",
            False,
            MISSING,
            event={"type": "example.event.type"},
        ),
        Case(
            "id LIKE 'my%' OR source LIKE '%.ca'",
            True,
            event={"id": "notmyId", "source": "http://www.some-website.ca"},
        ),
        Case(
            "id LIKE 'my%' OR source LIKE '%.ca'",
            False,
            event={"id": "notmyId", "source": "http://www.some-website.com"},
        ),
        Case("id LIKE 'my%' OR myext LIKE '%ext'", False, MISSING, event={"id": "notmyId"}),
        Case(_DNF, True, event={"id": "myId", "type": "example.event.success"}),
        Case(
            _DNF,
            True,
            event={
                "id": "notmyId",
                "type": "example.event.warning",
                "source": "http://localhost.localdomain",
            },
        ),
        Case(
            _DNF,
            False,
            event={
                "id": "notmyId",
                "type": "example.event.warning",
                "source": "https://localhost.localdomain",
            },
        ),
        Case(
            _DNF + " OR (myext = 'customext')",
            False,
            MISSING,
            event={"id": "notmyId", "type": "example.event.warning", "source": "https://x"},
        ),
        Case(
            _CNF,
            True,
            event={"id": "myId", "type": "example.event.warning", "source": "http://x"},
        ),
        Case(
            _CNF,
            True,
            event={"id": "notmyId", "type": "example.event.success", "source": "http://x"},
        ),
        Case(
            _CNF,
            False,
            event={"id": "notmyId", "type": "example.event.warning", "source": "http://x"},
        ),
        Case(
            _CNF,
            False,
            event={"id": "myId", "type": "example.event.success", "source": "http://x"},
        ),
        Case(
            _CNF + " AND (myext = 'customext')",
            False,
            MISSING,
            event={"id": "myId", "type": "example.event.warning", "source": "http://x"},
        ),
        # AND short-circuits: the missing extension is never read.
        Case(
            _CNF + " AND (myext = 'customext')",
            False,
            event={"id": "myId", "type": "example.event.success", "source": "http://x"},
        ),
    ),
)
def test_subscriptions_api_filters_in_cesql(case: Case) -> None:
    check(case)
