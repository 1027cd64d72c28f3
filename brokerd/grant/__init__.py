"""The OAuth grant of each server: the actor that owns it, and what all actors share.

* ``_context``: :class:`OAuthContext` (HTTP client, callback listeners, work nursery, clock) and the
  proactive-renewal :class:`Scheduler`;
* ``_grant``: :class:`~brokerd.grant._grant.Grant`, one server's tokens, registrations and renewal state,
  and their only writer;
* ``_actor``: :class:`OAuthActor`, which carries out what the renewal machine (``brokerd.renewal``)
  decides, runs renewals and keeps them from being cancelled;
* ``_login`` (browser, paste, device, step-up), ``_forget`` (logout, invalidate), ``_import`` (NCP's
  grants), ``_status`` (what ``status`` says).
"""

from brokerd.grant._actor import OAuthActor
from brokerd.grant._context import OAuthContext, Scheduler

__all__ = ["OAuthActor", "OAuthContext", "Scheduler"]
