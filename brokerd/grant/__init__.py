"""The OAuth grant of each server: the actor that owns it, and what all actors share.

* ``_context``: :class:`OAuthContext` (HTTP client, callback listeners, work nursery, clock) and the
  proactive-renewal :class:`Scheduler`;
* ``_grant``: :class:`~brokerd.grant._grant.Grant`, one server's tokens, registrations and renewal state,
  and their only writer;
* ``_actor``: :class:`OAuthActor`, which carries out what the renewal machine (``brokerd.renewal``)
  decides, runs renewals (``_renew``: one renewal, its answer persisted or its failure classified) and
  keeps them from being cancelled;
* ``_present`` (what each grant type presents at the token endpoint: E1, E2, E4), ``_sources`` (workload
  and ID tokens from a file or a command), ``_client_key`` (the ``private_key_jwt`` key), ``_dpop`` (the
  grant's DPoP key and the proofs made with it: E3), ``_enterprise`` (the IdP login that a company's
  servers share: E2);
* ``_login`` (browser, paste, device, step-up), ``_forget`` (logout, invalidate), ``_import`` (NCP's
  grants), ``_status`` (what ``status`` says).
"""

from brokerd.grant._actor import OAuthActor
from brokerd.grant._context import OAuthContext, Scheduler
from brokerd.grant._enterprise import IdpRegistry

__all__ = ["IdpRegistry", "OAuthActor", "OAuthContext", "Scheduler"]
