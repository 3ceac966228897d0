"""What a new user id must be: one spelling of a name that looks like no other.

RFC 8265's UsernameCasePreserved profile (PRECIS): letters, digits and visible ASCII, no spaces,
controls, invisible or compatibility characters, and the bidi rule. Case is kept so that imported
ids ("A1RSDE90N6RSZF") can still be claimed as they are; ids differing only in case are told
apart by the accounts view's skeleton instead (projections/accounts.py). An id the profile would
rewrite (fullwidth letters, an NFD spelling) is refused with its one spelling rather than rewritten,
so the id signed in with, written in URLs and tokens is the one the user typed.
Beyond the profile: not only dots ("." and ".." are no path segment), and one script (Unicode
TR 39's single-script rule). Ids already in the log (imports, earlier accounts) are left as they are.
"""

from __future__ import annotations

import unicodedata

from confusable_homoglyphs.categories import unique_aliases
from precis_i18n import get_profile

from events.errors import HarmonyError

PROFILE = get_profile("UsernameCasePreserved")

# PRECIS's reasons, in words.
_REASONS = {
    "DISALLOWED/spaces": "must not contain a space",
    "DISALLOWED/controls": "must not contain a control character",
    "DISALLOWED/precis_ignorable_properties": "must not contain an invisible character",
    "DISALLOWED/has_compat": "must not contain a compatibility character",
    "DISALLOWED/symbols": "must not contain a symbol",
    "DISALLOWED/punctuation": "must not contain punctuation outside ASCII",
    "DISALLOWED/bidi_rule": "must not mix right-to-left and left-to-right letters",
}
# Scripts that write together (TR 39's augmented script sets: Japanese, Korean, Chinese with
# Bopomofo); "common" (digits, ASCII punctuation) and "inherited" (combining marks) go with any.
_WRITTEN_TOGETHER = ({"HAN", "HIRAGANA", "KATAKANA"}, {"HAN", "HANGUL"}, {"HAN", "BOPOMOFO"})
_ANY_SCRIPT = {"COMMON", "INHERITED"}


class InvalidUserId(HarmonyError):
    """A new user id breaks the rule for new ids; the message says how."""


def check_new_user_id(user_id: str) -> None:
    """Raise InvalidUserId unless `user_id` may name a new account."""
    try:
        spelt = PROFILE.enforce(user_id)
    except UnicodeEncodeError as error:
        char = user_id[error.start:error.end]  # a whole-string reason (the bidi rule) names no character
        which = f" (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})" if len(char) == 1 else ""
        raise InvalidUserId(f"user id {_REASONS.get(error.reason, 'must not contain that character')}{which}") from None
    if spelt != user_id:
        raise InvalidUserId(f"user id must be written in its one spelling (NFC, no fullwidth letters): {spelt!r}")
    if not user_id.strip("."):
        raise InvalidUserId("user id must not be only dots")
    scripts = unique_aliases(user_id) - _ANY_SCRIPT
    if len(scripts) > 1 and not any(scripts <= together for together in _WRITTEN_TOGETHER):
        raise InvalidUserId(f"user id must be in one script, not {' and '.join(sorted(s.title() for s in scripts))}")
