"""What the Cognito triggers raise. Cognito shows a trigger's error message to the client
(`PreSignUp failed with error <message>.`), so every message here is written for the user
and names no secret: no key, no parameter, no table, no account."""

from __future__ import annotations


class Refused(Exception):
    """The trigger's decision is no: sign-up, sign-in or the token is refused."""


class InvalidSignUp(Refused):
    """The sign-up's attributes are missing, malformed or not the user's to set."""


class WrongRegion(Refused):
    """The user's home region is another region: they sign up or sign in there."""


class AlreadyRegistered(Refused):
    """The username is registered with another home region."""


class NotRegistered(Refused):
    """No registry entry for the user: they did not sign up through the triggers."""


class IdentityUnavailable(Exception):
    """Anything else (configuration, AWS): logged in full, shown to the client as this."""

    MESSAGE = "the identity service is unavailable, try again later"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
