from __future__ import annotations

from datetime import datetime
from typing import Annotated

import email_validator
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from reviewpoint.inputs import InputModel
from reviewpoint.users.models import NAME_MAX_LENGTH

# Users per page of a listing (API and CLI): by default, and at most.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024

# email-validator refuses addresses under special-use names (RFC 6761: `.test`,
# `.local`...): the schema says so, since `format: email` alone allows them.
_SPECIAL_USE = "|".join(
    "".join(f"[{c}{c.upper()}]" for c in name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
)
Email = Annotated[
    EmailStr, Field(json_schema_extra={"pattern": f"^(?!.*[.@]({_SPECIAL_USE})\\.?$)"})
]
# NUL in any of these strings is refused by InputModel (PostgreSQL cannot store it).
Name = Annotated[str | None, Field(max_length=NAME_MAX_LENGTH)]
Password = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]


class UserCreate(InputModel):
    email: Email
    password: Password
    name: Name = None
    is_active: bool = True
    is_admin: bool = False


class UserUpdate(InputModel):
    email: Email | None = None
    password: Password | None = None
    name: Name = None
    is_active: bool | None = None
    is_admin: bool | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str | None
    is_active: bool
    is_admin: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int
