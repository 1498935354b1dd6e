"""Bad remotes give one-line errors naming the remote and the fix; a stalled or stopped
store ends in RemoteUnavailable within the retry budget; the cloud SDKs stay out of
``import coralfs``; a missing extra names ``pip install 'coralfs[cloud]'``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coralfs.remote._common import scrub
from coralfs.remote.blobs import RemoteError, RemoteUnavailable
from coralfs.remote.url import open_blobs
from tests.remote.emulators import AZ_ACCOUNT, AZ_KEY, free_port, start_moto

FAST = {"connect_timeout": 1, "read_timeout": 2, "retries": 1, "retry_timeout": 5}


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


def test_missing_bucket_is_named_with_the_fix(cloud_remote):
    kind = cloud_remote.kind
    url = f"{kind}://no-such-bucket-{free_port()}/repo"
    b = cloud_remote.open(url=url)
    for op in (lambda: b.get("refs/heads/main"), lambda: b.get_range("packs/p.pack", 10, 20), lambda: list(b.list()),
               lambda: b.put("x", b"1")):
        with pytest.raises(RemoteError) as e:
            op()
        msg = one_line(e.value)
        assert url in msg and "does not exist: create it or fix the URL" in msg, msg


def test_endpoint_down_says_cannot_reach(cloud_remote):
    endpoint = f"http://127.0.0.1:{free_port()}"
    if cloud_remote.kind == "az":
        endpoint += "/devstoreaccount1"
    b = open_blobs(cloud_remote.url, endpoint=endpoint, options=FAST)
    try:
        for op in (lambda: b.get("refs/heads/main"), lambda: b.put("refs/heads/main", b"1")):
            with pytest.raises(RemoteUnavailable) as e:
                op()
            msg = one_line(e.value)
            assert f"cannot reach {endpoint}" in msg and "is the service running?" in msg, msg
            assert cloud_remote.url in msg and "refs/heads/main" in msg, msg
    finally:
        b.close()


@pytest.mark.timeout(300)
def test_stalled_store_gives_up_within_the_budget(cloud_remote):
    """SIGSTOP the emulator: every call returns RemoteUnavailable (the pytest timeout only
    catches a wedge: the calls take ~3 x 5 s; generous for a loaded machine), and the store
    works again after SIGCONT."""
    b = cloud_remote.open(FAST)
    b.put("packs/p.pack", b"0123456789")
    cloud_remote.service.pause()
    try:
        for op in (lambda: b.get_range("packs/p.pack", 2, 4), lambda: b.put("refs/heads/main", b"c"),
                   lambda: b.head("packs/p.pack")):
            with pytest.raises(RemoteUnavailable) as e:
                op()
            assert "cannot reach" in one_line(e.value)
    finally:
        cloud_remote.service.resume()
    assert b.get_range("packs/p.pack", 2, 4) == b"2345"


def test_wrong_azure_key_is_a_credentials_error(az_remote, monkeypatch):
    conn = az_remote.env["AZURE_STORAGE_CONNECTION_STRING"]
    key = conn.split("AccountKey=")[1].split(";")[0]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn.replace(key, "A" * 86 + "=="))
    b = az_remote.open()
    with pytest.raises(RemoteError) as e:
        b.get("refs/heads/main")
    msg = one_line(e.value)
    assert "refused the credentials" in msg and "AZURE_STORAGE_CONNECTION_STRING" in msg, msg


def test_a_malformed_azure_key_says_what_to_check(az_remote, monkeypatch):
    conn = az_remote.env["AZURE_STORAGE_CONNECTION_STRING"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn.replace(AZ_KEY, "not-base64!secret"))
    with pytest.raises(RemoteError) as e:
        az_remote.open().get("refs/heads/main")
    msg = one_line(e.value)
    assert "check AZURE_STORAGE_CONNECTION_STRING" in msg and "secret" not in msg, msg


def test_wrong_aws_keys_are_a_credentials_error(tmp_path, monkeypatch):
    """moto in IAM mode accepts only keys it issued: made-up keys are refused."""
    svc = start_moto(str(tmp_path), check_credentials=True)
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        b = open_blobs("s3://some-bucket/repo", endpoint=svc.endpoint)
        with pytest.raises(RemoteError) as e:
            b.get("refs/heads/main")
        msg = one_line(e.value)
        assert "refused the credentials (AWS_ACCESS_KEY_ID in the environment)" in msg, msg
        assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in msg, msg
        b.close()
    finally:
        svc.stop()


def test_unreadable_google_credentials_file(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(RemoteError) as e:
        open_blobs("gs://bucket/repo")
    msg = one_line(e.value)
    assert msg.startswith("gs://bucket/repo: no usable Google credentials (") and "missing-key.json" in msg, msg
    assert "set GOOGLE_APPLICATION_CREDENTIALS" in msg


def test_azure_account_name_and_key_variables(az_remote, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)
    b = az_remote.open()
    assert b.credentials == "AZURE_STORAGE_ACCOUNT_KEY"
    b.put("refs/heads/main", b"c1")
    assert b.get("refs/heads/main") == b"c1"


def test_a_sas_token_never_reaches_a_message(az_remote, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "sv=2021-08-06&ss=b&srt=sco&sp=rwdl&se=2099-01-01&sig=SECRETSIG123")
    b = az_remote.open()
    assert b.credentials == "AZURE_STORAGE_SAS_TOKEN"
    for op in (lambda: b.get("k"), lambda: b.put("k", b"1"), lambda: list(b.list())):
        with pytest.raises(RemoteError) as e:
            op()
        assert "SECRETSIG123" not in str(e.value) and "refused the credentials" in str(e.value), str(e.value)


def test_scrub_hides_signed_url_parameters():
    text = ("GET http://h/c/k?sv=1&sig=abc%2Fdef&se=2 and X-Amz-Signature=0123 X-Amz-Credential=AKIA/x "
            "x-goog-signature=ff token=t0k")
    out = scrub(text)
    for secret in ("abc%2Fdef", "0123", "AKIA/x", "ff", "t0k"):
        assert secret not in out, out
    assert out.startswith("GET http://h/c/k?sv=1&sig=***&se=2")


def test_azure_without_an_account_says_what_to_set(az_remote, monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(RemoteError) as e:
        az_remote.open()
    assert "set AZURE_STORAGE_CONNECTION_STRING" in one_line(e.value)


def test_s3_profile_from_the_shared_files(s3_remote, monkeypatch, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("[emu]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
                     "[sso]\nsso_session = corp\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    b = s3_remote.open({"profile": "emu"})
    assert b.credentials == "AWS profile 'emu'"
    b.put("refs/heads/main", b"c1")
    assert b.get("refs/heads/main") == b"c1"
    with pytest.raises(RemoteError) as e:
        s3_remote.open({"profile": "nope"})
    assert "aws configure --profile nope" in one_line(e.value)
    with pytest.raises(RemoteError) as e:
        s3_remote.open({"profile": "sso"})
    assert "export-credentials --profile sso" in one_line(e.value)


def test_bad_timeout_option(s3_remote):
    with pytest.raises(RemoteError) as e:
        s3_remote.open({"timeout": "soon"})
    assert "timeout='soon' is not a number" in one_line(e.value)


FORK = r"""
import os, sys
from coralfs.remote.url import open_blobs
b = open_blobs(sys.argv[1], endpoint=sys.argv[2])
b.put("k", b"v")
pid = os.fork()
if pid == 0:
    try:
        b.get("k")
        print("child read it")
    except Exception as e:
        print(type(e).__name__, e)
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
print("parent", b.get("k").decode())
"""


@pytest.mark.timeout(120)
def test_a_forked_child_gets_an_error_not_a_wedge(s3_remote):
    """obstore's runtime does not survive fork (a request there never returns): the child
    is refused with the fix, and the parent goes on."""
    p = subprocess.run([sys.executable, "-c", FORK, s3_remote.url, s3_remote.endpoint], capture_output=True,
                       text=True, timeout=100)
    assert p.returncode == 0, p.stderr
    child, parent = p.stdout.strip().splitlines()
    assert child.startswith("RemoteError ") and "use the 'spawn' or 'forkserver' start method" in child, child
    assert parent == "parent v"


def test_unknown_scheme():
    with pytest.raises(RemoteError) as e:
        open_blobs("ftp://host/x")
    assert "use one of file://, s3://, gs://, az://" in one_line(e.value)


SDKS = ("obstore", "google", "boto3", "botocore", "azure", "requests")


def test_import_coralfs_loads_no_cloud_sdk():
    code = ("import sys, coralfs, coralfs.cli.main, coralfs.remote.url, coralfs.remote.file, coralfs.remote.packs\n"
            "coralfs.cli.main.load_commands()\n"   # every command module (importing main loads none)
            "import coralfs.remote.doctor\n"
            f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({SDKS!r}))\n"
            "print(bad)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.parametrize(("scheme", "module"), [("s3", "obstore"), ("az", "obstore"), ("gs", "google")])
def test_missing_cloud_extra_names_the_install_command(scheme, module):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {module!r}:
            raise ImportError('blocked', name=name)
sys.meta_path.insert(0, Block())
from coralfs.remote.url import open_blobs
from coralfs.remote.blobs import RemoteError
try:
    open_blobs('{scheme}://bucket/prefix')
except RemoteError as e:
    print(e)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("pip install 'coralfs[cloud]'"), p.stdout
    assert p.stdout.strip().startswith(f"{scheme}:// remotes need the cloud extra"), p.stdout


def test_a_failing_range_get_is_sent_once_per_try(monkeypatch):
    """A store answering 503 to everything: get_range_view gives up after as many requests
    as get_range (it retries only a range past the end, never an error)."""
    import http.server
    import threading
    seen = []

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            seen.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    b = open_blobs("s3://bucket/repo", endpoint=f"http://127.0.0.1:{server.server_address[1]}", options=FAST)
    try:
        counts = []
        for fn in (b.get_range, b.get_range_view):
            seen.clear()
            with pytest.raises(RemoteUnavailable) as e:
                fn("packs/p.pack", 0, 100)
            assert "503" in one_line(e.value)
            counts.append(len(seen))
        assert counts[0] >= 1 and counts[1] == counts[0], counts
    finally:
        b.close()
        server.shutdown()
        server.server_close()
