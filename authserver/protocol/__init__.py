"""The OAuth 2.0 / OpenID Connect edge, thin over the domain.

One module per endpoint, each owning its blueprint: ``token`` (``/oauth/token``),
``authorize`` (``/oauth/authorize``), ``revocation`` (``/oauth/revoke``), ``introspection``
(``/oauth/introspect``), ``registration`` (``/oauth/register``), ``userinfo``
(``/oauth/userinfo``), ``logout`` (``/logout``) and ``discovery`` (the JWKS and metadata
documents). The others support them: the Authlib server and grants, client authentication,
the checks of client requests, DPoP, the bearer-token check, token issuing and verifying,
OAuth errors, and the token endpoint's fast path.
"""
