"""The Client's contact details (R-PRIV-1, R-PRIV-3), kept up to date by its owners and
admins.

The contract makes false or outdated contact details a ground for suspension and asks
the Client to report changes within 48 hours, so the Client edits them itself, every
change is recorded as a ``tenant.contact`` event (who, when, each field's old and new
value: the audit R-PRIV-2 rectifications need), and phone numbers are validated with
``phonenumbers`` (French numbers may be written nationally, others need their +
prefix) and stored in E.164 form.
"""

from __future__ import annotations

from typing import Any

import phonenumbers

from allset.accounts.service import Accounts, check_email
from allset.core.errors import InvalidInput, NotFound
from allset.core.principal import Principal
from allset.db.models import Event, Tenant
from allset.files.access import require_manager

FIELDS = ("company", "postal_address", "contact_name", "contact_email", "phones")
MAX_PHONES = 5
LIMITS = {"company": 200, "postal_address": 1000, "contact_name": 200}


class BadPhone(InvalidInput):
    """A phone number that is not a valid number; ``number`` names it."""


def normalise_phone(raw: str, region: str = "FR") -> str:
    """E.164 (``+33123456789``) of a valid number, else ``BadPhone`` in plain words."""
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise BadPhone(f"{text!r} is not a phone number.", number=text) from exc
    if not phonenumbers.is_valid_number(number):
        raise BadPhone(
            f"{text!r} is not a valid phone number (a number outside France needs its "
            "country code, e.g. +32 2 555 12 12).",
            number=text,
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display_phone(e164: str) -> str:
    """A stored number written for people (international format)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _view(t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "company": t.company or "",
        "postal_address": t.postal_address or "",
        "contact_name": t.contact_name or "",
        "contact_email": t.contact_email or "",
        "phones": list(t.phones or []),
    }


class Contacts:
    def __init__(self, accounts: Accounts) -> None:
        self.db = accounts.db

    def get(self, p: Principal) -> dict[str, Any]:
        require_manager(p)
        with self.db.read() as s:
            t = s.get(Tenant, p.tenant_id)
            if t is None:
                raise NotFound("Not found.")
            return _view(t)

    def update(
        self,
        p: Principal,
        *,
        company: str,
        postal_address: str,
        contact_name: str,
        contact_email: str,
        phones: list[str],
    ) -> dict[str, Any]:
        """Validate everything first (nothing is saved when one field is wrong), then
        save and record what changed. Returns the new view plus ``changed`` (names)."""
        require_manager(p)
        new: dict[str, Any] = {
            "company": company.strip(),
            "postal_address": postal_address.strip().replace("\r\n", "\n"),
            "contact_name": contact_name.strip(),
        }
        for field, limit in LIMITS.items():
            if len(new[field]) > limit or "\x00" in new[field]:
                raise InvalidInput(f"{field} is too long (at most {limit} characters).")
        email = contact_email.strip()
        new["contact_email"] = check_email(email) if email else ""
        cleaned = [x for x in (ph.strip() for ph in phones) if x]
        if len(cleaned) > MAX_PHONES:
            raise InvalidInput(f"At most {MAX_PHONES} phone numbers.")
        normalised: list[str] = []
        for ph in cleaned:
            e164 = normalise_phone(ph)
            if e164 not in normalised:
                normalised.append(e164)
        new["phones"] = normalised
        with self.db.write() as s:
            t = s.get(Tenant, p.tenant_id)
            if t is None:
                raise NotFound("Not found.")
            old = _view(t)
            changed = {k: {"from": old[k], "to": new[k]} for k in FIELDS if old[k] != new[k]}
            if changed:
                t.company = new["company"]
                t.postal_address = new["postal_address"]
                t.contact_name = new["contact_name"]
                t.contact_email = new["contact_email"]
                t.phones = new["phones"]
                s.add(
                    Event(
                        tenant_id=t.id,
                        actor=p.email,
                        kind="tenant.contact",
                        detail={"changed": changed},
                    )
                )
            view = _view(t)
            view["changed"] = sorted(changed)
            return view
