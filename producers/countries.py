"""English country names -> ISO 3166-1 alpha-2 codes, for files that name countries in words.

The UCI Online Retail file's ``Country`` column holds English names, some of them its own
("EIRE", "USA", "RSA"). :func:`country_code` looks a name up, ignoring case and surrounding
spaces, among: the names the file uses that are not the tz database's usual ones
(:data:`ALIASES`), then the tz database's English name of every assigned code
(:data:`schemas.countries.COUNTRY_NAMES`), then the codes themselves. A few names stand for no
single country (:data:`NO_COUNTRY`: "Channel Islands" are two Crown dependencies, Jersey and
Guernsey; "European Community" is many; "Unspecified" is none): they give ``None``, a customer
profile without a country. Anything else is unknown (:class:`UnknownCountry`).

Pure data and a look-up: no I/O.
"""

from __future__ import annotations

from schemas.countries import COUNTRY_CODES, COUNTRY_NAMES

__all__ = ["ALIASES", "NO_COUNTRY", "UnknownCountry", "country_code"]

#: Names (lower case) that mean one country, where the tz database's name differs.
ALIASES: dict[str, str] = {
    "united kingdom": "GB",
    "great britain": "GB",
    "eire": "IE",
    "usa": "US",
    "united states of america": "US",
    "rsa": "ZA",
    "czechia": "CZ",
    "south korea": "KR",
    "korea": "KR",
    "russia": "RU",
    "turkey": "TR",
    "türkiye": "TR",
}
#: Names (lower case) that stand for no single country: the profile carries none.
NO_COUNTRY: frozenset[str] = frozenset(
    {"channel islands", "european community", "unspecified", "", "unknown"}
)
_BY_NAME: dict[str, str] = {name.lower(): code for code, name in COUNTRY_NAMES.items()}


class UnknownCountry(ValueError):
    """A country name that is neither a known name nor an assigned code."""


def country_code(name: str) -> str | None:
    """The code of the country ``name`` names; ``None`` for :data:`NO_COUNTRY` names."""
    key = name.strip().lower()
    if key in NO_COUNTRY:
        return None
    code = ALIASES.get(key) or _BY_NAME.get(key)
    if code is not None:
        return code
    if key.upper() in COUNTRY_CODES:
        return key.upper()
    raise UnknownCountry(f"unknown Country {name.strip()!r} (not a country name or ISO code)")
