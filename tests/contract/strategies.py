"""Users the API accepts, generated: the emails and names its own schema lets through.

Nothing here restates the validation rules. Every candidate is put to the
schema the route uses (`UserCreate`: pydantic's `EmailStr`, which is
email-validator, and `Name`), and what it stores is what the tests expect
back: email-validator normalises (NFC, lower-case domain, IDNA to Unicode), so
the stored email may differ from the one sent.

- Emails: dot-atom local parts over every ASCII character the validator takes
  (probed one by one at import, so `= + - ' ...` come from it, not from a
  list here) and any non-ASCII character it takes, often behind a formula
  trigger; IDN and generated domains. Whole addresses the validator refuses
  are filtered out.
- Names: any text of up to `NAME_MAX_LENGTH` code points without NUL (the one
  character `InputModel` refuses) or lone surrogates (which JSON can spell
  but pydantic refuses), mixed with the fragments that break writers: quotes,
  separators, CR/LF, formula triggers, XML-forbidden and astral characters.
  `test_generated_users_are_accepted_by_the_api` holds the claim to the API.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import strategies as st
from hypothesis.provisional import domains
from pydantic import ValidationError

from reviewpoint.users.models import NAME_MAX_LENGTH
from reviewpoint.users.schemas import UserCreate

PASSWORD = "generated-password-1"
_ASCII_UPPER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def accepted_email(email: str) -> str | None:
    """What the API stores for `email`, or None if its schema refuses it."""
    try:
        return UserCreate(email=email, password=PASSWORD).email
    except ValidationError:
        return None


def email_key(email: str) -> str:
    """Two live users may not share this (ASCII-only case folding, users/models.py)."""
    return email.translate(_ASCII_UPPER)


# The ASCII characters the validator takes inside a local part, asked of it.
LOCAL_ASCII = [c for c in string.printable if accepted_email(f"a{c}b@example.com") is not None]
_LOCAL_CHARACTER = st.one_of(
    st.sampled_from(LOCAL_ASCII),
    st.characters(min_codepoint=0x80, exclude_categories=["Cs"]).filter(
        lambda c: accepted_email(f"a{c}b@example.com") is not None
    ),
)
_DOMAINS = st.one_of(
    st.sampled_from(
        ["example.com", "EXAMPLE.org", "xn--bcher-kva.example", "例え.jp", "Bücher.example"]
    ),
    domains(max_length=40),
)


@dataclass(frozen=True)
class GeneratedEmail:
    given: str  # as a client sends it
    stored: str  # as the API stores (and exports) it


def _email(local: str, domain: str) -> GeneratedEmail | None:
    given = f"{local}@{domain}"
    stored = accepted_email(given)
    return None if stored is None else GeneratedEmail(given, stored)


emails = st.builds(
    _email,
    st.builds(
        str.__add__,
        # Formula triggers first, often: what the CSV guard acts on.
        st.sampled_from(["", "", "=", "+", "-"]),
        st.text(_LOCAL_CHARACTER, min_size=1, max_size=12),
    ),
    _DOMAINS,
).filter(lambda email: email is not None)

# What breaks writers of some format: CSV quoting and guard triggers, COPY's
# end marker and printf conversions (the SQL paths), XML's markup, forbidden
# characters and Excel's `_xHHHH_` escapes, JSON's escapes, line and bidi
# controls, astral characters.
HOSTILE_FRAGMENTS = [
    "=",
    "+",
    "-",
    "@",
    "\t",
    "\r",
    "\n",
    "\r\n",
    ",",
    ";",
    '"',
    "'",
    '"\r"\n',
    ',"\r"\n',
    "\\",
    "\\.",
    "%s",
    "%",
    "<",
    ">",
    "&",
    "]]>",
    "_x000D_",
    "_x0041_",
    "_x005F_",
    "\x01",
    "\x08",
    "\x0b",
    "\x1f",
    "\x7f",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "🚀",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # one emoji of three, ZWJ-joined
    "\U0001d49c",  # mathematical script capital A, astral
    "\U0010fffd",
    " ",
    "Zoë",
]
# Any code point but NUL and the surrogates: controls, private use, unassigned.
_NAME_CHARACTERS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
names = st.one_of(
    st.none(),
    st.lists(
        st.one_of(st.sampled_from(HOSTILE_FRAGMENTS), st.text(_NAME_CHARACTERS, max_size=8)),
        max_size=12,
    ).map(lambda pieces: "".join(pieces)[:NAME_MAX_LENGTH]),
    st.text(_NAME_CHARACTERS, min_size=NAME_MAX_LENGTH - 2, max_size=NAME_MAX_LENGTH),
)
# Stored timestamps: whole range of microseconds (SQLite's are text, cut to the second).
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@dataclass(frozen=True)
class GeneratedUser:
    email: GeneratedEmail
    name: str | None
    is_active: bool
    is_admin: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    def create(self) -> UserCreate:
        """The request body the API takes for this user (raises if it refuses it)."""
        return UserCreate(
            email=self.email.given,
            password=PASSWORD,
            name=self.name,
            is_active=self.is_active,
            is_admin=self.is_admin,
        )


users = st.builds(
    GeneratedUser,
    email=emails,
    name=names,
    is_active=st.booleans(),
    is_admin=st.booleans(),
    created_at=moments,
    updated_at=moments,
    last_login_at=st.none() | moments,
)


def user_batches(max_size: int) -> st.SearchStrategy[list[GeneratedUser]]:
    """Users that can live side by side: no two share an email's key."""
    return st.lists(users, max_size=max_size, unique_by=lambda user: email_key(user.email.stored))
