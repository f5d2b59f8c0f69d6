"""The OAuth 2.0 / OpenID Connect edge, thin over the domain.

One module per endpoint, each owning its blueprint: ``token`` (``/oauth/token``),
``authorize`` (``/oauth/authorize``), ``revocation`` (``/oauth/revoke``), ``introspection``
(``/oauth/introspect``), ``registration`` (``/oauth/register``), ``userinfo``
(``/oauth/userinfo``), ``logout`` (``/logout``), ``status_lists`` (``/oauth/status``) and
``discovery`` (the JWKS and metadata documents). The others support them: the Authlib
server and grants, client authentication, the checks of client requests, DPoP, the
bearer-token check, token issuing and verifying, OAuth errors, the token endpoint's fast
path, CORS, a browser app's refresh cookie and the status list's encoding.
"""
