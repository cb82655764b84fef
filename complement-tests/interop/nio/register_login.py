"""Register, log in, ask who we are and log out through matrix-nio.

Usage: python register_login.py BASE_URL USERNAME PASSWORD

Only nio's own AsyncClient API is used (no raw HTTP), so a pass proves nio
works against the server at BASE_URL. nio validates every response body
against its JSON schemas, so a malformed response shows up as an error
response here too.

On success prints exactly one JSON line on stdout and exits 0. On failure
prints the reason on stderr and exits 1. nio reports failures by returning
`*Error` response objects rather than raising, so every response's type is
checked.
"""

import asyncio
import importlib.metadata
import json
import logging
import sys
import traceback

from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginError,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    WhoamiError,
    WhoamiResponse,
)


class InteropError(Exception):
    """A step did not give what a working server gives."""


def expect(response, expected_type, step):
    """Returns `response` if it is an `expected_type`, else fails `step`."""
    if not isinstance(response, expected_type):
        raise InteropError(
            f"{step}: expected {expected_type.__name__}, got "
            f"{type(response).__name__}: {response}"
        )
    return response


def outcome(response, error_type):
    """For a request that should be refused: the errcode it was refused
    with, or "accepted" (the caller's test decides what is right)."""
    if isinstance(response, error_type):
        return response.status_code
    return "accepted"


def new_client(base_url, username):
    # Without limits nio retries refused connections and 429s forever; a
    # test wants the first failure reported instead.
    config = AsyncClientConfig(
        max_timeouts=0,
        max_limit_exceeded=0,
        request_timeout=30,
    )
    return AsyncClient(base_url, username, config=config)


async def run(base_url, username, password):
    # nio's register() sends `auth: {"type": "m.login.dummy"}` (without a
    # session) in its first and only request, so this proves the server
    # completes the dummy flow for a client that skips the 401 round trip.
    registrar = new_client(base_url, username)
    try:
        registered = expect(
            await registrar.register(
                username, password, device_name="axon interop (nio register)"
            ),
            RegisterResponse,
            "register",
        )
    finally:
        await registrar.close()

    client = new_client(base_url, username)
    try:
        wrong = await client.login("not-" + password, device_name="wrong")
        wrong_password = outcome(wrong, LoginError)

        # login() identifies the user as {"type": "m.id.user", "user": <the
        # client's user>}, here the bare username.
        logged_in = expect(
            await client.login(password, device_name="axon interop (nio login)"),
            LoginResponse,
            "login",
        )
        whoami = expect(await client.whoami(), WhoamiResponse, "whoami")

        token = client.access_token
        expect(await client.logout(), LogoutResponse, "logout")
        # nio forgets the token on logout; put it back to prove the server
        # no longer accepts it.
        client.access_token = token
        after_logout = outcome(await client.whoami(), WhoamiError)
    finally:
        await client.close()

    return {
        "client": "matrix-nio",
        # Reported so the test can tell a stale venv from the pinned one.
        "client_version": importlib.metadata.version("matrix-nio"),
        "register_user_id": registered.user_id,
        "register_device_id": registered.device_id,
        "user_id": logged_in.user_id,
        "device_id": logged_in.device_id,
        "whoami_user_id": whoami.user_id,
        "whoami_device_id": whoami.device_id,
        "wrong_password": wrong_password,
        "after_logout": after_logout,
    }


def main(argv):
    if len(argv) != 4:
        print("usage: register_login.py BASE_URL USERNAME PASSWORD", file=sys.stderr)
        return 2
    # nio logs through `logging`; keep it on stderr, away from the result.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    _, base_url, username, password = argv
    try:
        result = asyncio.run(run(base_url, username, password))
    except InteropError as error:
        print(f"matrix-nio interop failed: {error}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - any failure is the report
        print("matrix-nio interop failed:", file=sys.stderr)
        traceback.print_exc()
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
