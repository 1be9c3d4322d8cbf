"""Database URLs: what each accepted form becomes, and the clear errors for the rest."""

from __future__ import annotations

import pytest

from agentmaestro.errors import ConfigError
from agentmaestro.store.dialects import normalize_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mysql://u:p@db.example:3306/maestro", "mysql+pymysql://u:p@db.example:3306/maestro?charset=utf8mb4"),
        ("mariadb://u@127.0.0.1/maestro", "mysql+pymysql://u@127.0.0.1/maestro?charset=utf8mb4"),
        ("mysql+pymysql://u@h/maestro?charset=utf8", "mysql+pymysql://u@h/maestro?charset=utf8"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("state.db", "sqlite:///state.db"),
    ],
)
def test_accepted_urls(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_a_mysql_url_must_name_its_database_and_hides_the_password() -> None:
    with pytest.raises(ConfigError, match="names no database") as exc:
        normalize_url("mysql://u:secret@h:3306")
    assert "secret" not in str(exc.value)


def test_an_unknown_database_names_the_three_choices() -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///PATH, postgresql://\.\.\. or mysql://"):
        normalize_url("oracle://u@h/db")
