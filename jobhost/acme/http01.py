"""
Answering ACME HTTP-01 challenges (RFC 8555 section 8.3) from the store.

The issuing code stores each token's key authorization in the shared store;
:class:`ChallengeResource`, mounted at :data:`ACME_CHALLENGE_PATH` on the
plain-HTTP listener, answers the CA from there, so any process or node that
shares the store can answer for any hostname.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from jobhost.acme.urls import HTTP01_PATH_PREFIX
from jobhost.store.interfaces import IStore
from jobhost.store.records import HTTP_01

#: Where the CA fetches ``/{token}`` (RFC 8555 section 8.3), as the bytes twisted.web compares.
ACME_CHALLENGE_PATH = HTTP01_PATH_PREFIX.encode("ascii")

#: A token is base64url text (RFC 8555 section 8.1); we allow 1-256 characters.
TOKEN_PATTERN = re.compile(rb"[A-Za-z0-9_-]{1,256}")

_TEXT = b"text/plain"
_PLAIN_UTF8 = b"text/plain; charset=utf-8"


def _plain(request, code: int, body: bytes, content_type: bytes = _PLAIN_UTF8) -> None:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.write(body)
    request.finish()


@attrs.define(eq=False, slots=False)
class ChallengeResource(Resource):
    """Serves ``GET {ACME_CHALLENGE_PATH}{token}`` with the token's key authorization.

    Mount it so that the token is the one remaining path segment
    (``request.postpath == [token]``).  It answers for *any* ``Host`` header:
    the CA asks for the hostname being validated, which is by definition one we
    do not serve yet.

    Responses:
        * 200 ``text/plain``: exactly the key authorization's bytes, no newline.
        * 400: the token is not 1-256 base64url characters (the store is not asked).
        * 404: the store has no such token.
        * 405: a method other than GET or HEAD.
        * 503: the store failed; the CA will retry.

    Attributes:
        store: The :class:`~jobhost.store.interfaces.IStore` holding challenges.
    """

    store: IStore

    isLeaf = True
    log = Logger()

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request):
        """Answer the request asynchronously; see the class docstring for the responses."""
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            _plain(request, 405, b"Method not allowed\n")
            return NOT_DONE_YET
        segments = request.postpath or []
        if len(segments) != 1 or not TOKEN_PATTERN.fullmatch(segments[0]):
            _plain(request, 400, b"Malformed challenge token\n")
            return NOT_DONE_YET
        token = segments[0].decode("ascii")
        closed: list[Failure] = []
        d = self.store.get_challenge(token)

        def on_closed(reason: Failure) -> None:
            # The CA gave up (or the connection dropped) before the store answered:
            # stop waiting, and remember not to write to a dead request.
            closed.append(reason)
            d.cancel()

        request.notifyFinish().addErrback(on_closed)

        def found(challenge) -> None:
            if closed:
                return
            if challenge.challenge_type != HTTP_01:
                # A TLS-ALPN-01 record (kept among the tokens): not for this URL.
                _plain(request, 404, b"Unknown challenge token\n")
                return
            self.log.debug(
                "Answering HTTP-01 challenge {token} for {hostname}",
                token=token,
                hostname=challenge.hostname,
            )
            _plain(request, 200, challenge.key_authorization.encode("utf-8"), _TEXT)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError) and closed:
                return
            if failure.check(KeyError):
                if not closed:
                    _plain(request, 404, b"Unknown challenge token\n")
                return
            self.log.failure(
                "Could not read HTTP-01 challenge {token} from the store",
                failure=failure,
                token=token,
            )
            if not closed:
                request.setHeader(b"Retry-After", b"5")
                _plain(request, 503, b"Challenge store unavailable\n")

        def bug(failure: Failure) -> None:
            self.log.failure("Answering HTTP-01 challenge {token} failed", failure=failure, token=token)
            if not closed and not request.finished:
                _plain(request, 500, b"Internal error\n")

        d.addCallbacks(found, failed)
        d.addErrback(bug)
        return NOT_DONE_YET


__all__ = ["ACME_CHALLENGE_PATH", "TOKEN_PATTERN", "ChallengeResource"]
