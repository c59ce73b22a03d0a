"""Local servers that answer as APNs, FCM and Web Push push services document.

HTTP/2 over TLS (ALPN "h2") on 127.0.0.1 with a self-signed certificate made
by ``cryptography``; the providers trust it through their ``ca_file`` option.
Each fake verifies what a real service verifies (JWT signatures with the
public key, paths, headers, payload) and records every request, so a test can
assert what was sent. Tests may script answers (status, headers, body) that
are returned in order before the fake falls back to success.
"""
