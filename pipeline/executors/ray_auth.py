"""Ray's token authentication as the ray executor uses it (Ray >= 2.52; pinned 2.60).

A cluster started with RAY_AUTH_MODE=token accepts a client only with its token, a static bearer
secret. Ray reads the client's token from, in this order: RAY_AUTH_TOKEN (the value), the file named
by RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token; and sends one only where RAY_AUTH_MODE=token is set (for
an explicit address, a token file alone does not switch it on).

Remote cluster (--address / RAY_ADDRESS): the user gives the token by those means and normlab passes
them through unchanged. It never reads the token's value, never ships it in the runtime environment
(each node has its own, in its own environment), never prints, logs or records it. Before ray.init,
one GCS call with that token tells whether the cluster takes it, so a refusal is one line naming what
to set; ray.init itself retries a refused token for ~20 s with a warning a second on stderr and ends
in "Failed to connect to Ray cluster", which does not say why.

Local cluster (normlab starts it): Ray 2.60 switches token auth on for it by default and writes the
token to ~/.ray/auth_token, state that outlives the grid and that a later `ray start --head` of this
user picks up (a cluster then refuses clients without RAY_AUTH_MODE=token). Unless the user chose
RAY_AUTH_MODE, normlab instead gives the cluster a fresh token in a 0600 file inside its private 0700
folder (pipeline.executors.ray_cluster.ray_temp_dir), points RAY_AUTH_TOKEN_PATH at it for the
cluster's life (Ray's processes inherit it), and restores the environment and removes the file at close.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.executors.base import ExecutorError, one_line

MODE, TOKEN, TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
HOW = (
    f"give Ray {MODE}=token and the cluster's token (`ray get-auth-token` on its head) in a file named by "
    f"{TOKEN_PATH}, in {TOKEN}, or in ~/.ray/auth_token (docs/scale-out.md)"
)


def token_file() -> Path | None:
    """The file Ray reads this process's token from (its precedence); None where RAY_AUTH_TOKEN gives it."""
    if os.environ.get(TOKEN):
        return None
    if os.environ.get(TOKEN_PATH):
        return Path(os.environ[TOKEN_PATH])
    return Path.home() / ".ray" / "auth_token"


def token_source() -> str:
    """Where Ray takes this process's token from, named without the token's value."""
    path = token_file()
    if path is None:
        return TOKEN
    return f"the file in {TOKEN_PATH} ({path})" if os.environ.get(TOKEN_PATH) else str(path)


def check_token_file() -> None:
    """A token file other local users can read hands them the cluster (anyone with the token runs code
    on it as its nodes' user): refused, as ssh refuses such a key. `ray get-auth-token --generate`
    writes it 0644 under the usual umask 022."""
    import stat

    path = token_file()
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) if path is not None else 0
    except OSError:
        return  # Ray says it cannot read it
    if mode & 0o077:
        raise ExecutorError(
            f"{token_source()}: the Ray token file is readable by other users (mode {oct(mode)}): chmod 600 {path}"
        )


def reload_ray_auth() -> None:
    """Ray caches the auth mode (RayConfig) and the token (a C++ loader): re-read both from the
    environment now, as Ray's own ray._private.authentication_test_utils.reset_auth_token_state does."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _stderr_held() -> Iterator[list[bytes]]:
    """Ray's C++ client warns on fd 2 when the GCS refuses it: held back here; the caller decides
    whether to replay it (out[0])."""
    sys.stderr.flush()
    saved = os.dup(2)
    out: list[bytes] = [b""]
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            out[0] = held.read()


def check_token(address: str) -> None:
    """One GCS call to the cluster at `address` (HOST:PORT) with this process's token, as ray.init
    would make it: an ExecutorError (one line) when the token is missing, its file is open to other
    users, the cluster refuses it, or nothing there speaks Ray's GCS protocol. Anything else is left
    to ray.init, which says it with its own retries."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError, RpcError

    reload_ray_auth()
    token_mode = os.environ.get(MODE, "").lower() == "token"
    if token_mode:
        try:  # without a token Ray's client aborts the process (a C++ check): asked first
            ensure_token_if_auth_enabled(None, create_token_if_missing=False)
        except AuthenticationError as err:
            raise ExecutorError(f"{MODE}=token but Ray finds no token ({str(err).split('. ')[0]}): {HOW}") from None
        check_token_file()
    refused, silent = False, None
    with _stderr_held() as held:
        try:
            GcsClient(address=address)
        except AuthenticationError:
            refused = True
        except RpcError as err:  # after Ray's own ~40 s wait; ray.init would wait so 20 times more
            silent = err
        except Exception:  # noqa: BLE001 - not ours to say: ray.init retries and reports it
            pass
    if refused:
        if not token_mode:
            raise ExecutorError(
                f"--address {address}: the Ray cluster requires token authentication and "
                f"{MODE} is not 'token' here: {HOW}"
            )
        raise ExecutorError(
            f"--address {address}: the Ray cluster refused the authentication token from {token_source()}: {HOW}"
        )
    if silent is not None:
        raise ExecutorError(
            f"--address {address}: the port takes connections but no Ray head answers there ({one_line(silent)})"
        )
    if held[0]:  # not a refusal: what Ray said stays said
        sys.stderr.write(held[0].decode(errors="replace"))
        sys.stderr.flush()


class LocalToken:
    """Token auth for a local cluster normlab starts, its token in `folder` (private, 0700): active
    from creation to close(). Where the user set RAY_AUTH_MODE (token or disabled), Ray does as they said."""

    def __init__(self, folder: Path):
        self.path: Path | None = None
        self._saved = {k: os.environ.get(k) for k in (MODE, TOKEN, TOKEN_PATH)}
        if MODE in os.environ:
            return
        fd, name = tempfile.mkstemp(prefix="auth-token-", dir=folder)  # O_EXCL, mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # 256 bits, as Ray's own generator
        self.path = Path(name)
        os.environ.pop(TOKEN, None)  # it would win over the file (Ray's precedence); restored at close
        os.environ.update({MODE: "token", TOKEN_PATH: name})
        reload_ray_auth()

    def close(self) -> None:
        """The environment as it was; the token file gone (the cluster has stopped)."""
        if self.path is None:
            return
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reload_ray_auth()
        self.path.unlink(missing_ok=True)
        self.path = None
