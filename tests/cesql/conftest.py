"""CESQL tests: the shared harness gets pytest's assertion messages too."""

import pytest

pytest.register_assert_rewrite("tests.cesql._harness")
