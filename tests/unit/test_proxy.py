"""Proxies as the environment names them, read once: which URL goes through which, and how the lean sender
speaks to one (absolute form for http, a CONNECT tunnel for https), its credentials never shown."""

from __future__ import annotations

import asyncio
import base64

import pytest
from azure.storage.queue.aio import QueueClient
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SettingsError
from core.proxy import Proxies, proxy_of
from core.retry import RetryPolicy
from core.settings import SAS_LIFETIME, Settings
from putmessage.connection_pool import ConnectionPool
from putmessage.pace import SendPace
from putmessage.sender import PutMessageSender
from testkit.loopback_proxy import LoopbackProxy

HTTPS = proxy_of("http://ops:pw@gw.corp:3128", "HTTPS_PROXY")
HTTP = proxy_of("gw.corp:8080", "HTTP_PROXY")


@pytest.mark.parametrize(
    ("url", "no_proxy", "through"),
    [
        ("https://acct.queue.core.windows.net/q", "", HTTPS),
        ("http://127.0.0.1:10001/devstoreaccount1/q", "", HTTP),
        ("https://acct.queue.core.windows.net/q", "core.windows.net", None),  # a name covers its subdomains
        ("https://acct.queue.core.windows.net/q", ".windows.net, localhost", None),
        ("https://acct.queue.core.windows.net/q", "windows.org", HTTPS),
        ("http://127.0.0.1:10001/q", "127.0.0.1:10001", None),
        ("http://127.0.0.1:10001/q", "127.0.0.1:10002", HTTP),
        ("https://anything.example/", "*", None),
        ("ftp://files.example/", "", None),
        ("https://acct.queue.core.windows.net/q", "*.windows.net", None),
        ("https://ACCT.Queue.Core.Windows.Net./q", "core.windows.net", None),  # any case, a trailing dot
        ("https://notcore.windows.net/q", "core.windows.net", HTTPS),  # a subdomain, not a suffix
        ("http://10.20.30.40:10001/q", "10.0.0.0/8", None),  # a CIDR block
        ("http://11.20.30.40:10001/q", "10.0.0.0/8", HTTP),
        ("http://[fd00::5]:10001/q", "fd00::/8", None),
        ("http://[::1]:10001/q", "::1", None),  # a bare IPv6 address
        ("http://[::1]:10001/q", "[::1]:10001", None),
        ("http://[::1]:10001/q", "[::1]:10002", HTTP),
        ("https://acct.queue.core.windows.net/q", "core.windows.net:443", None),  # the scheme's port, implicit
        ("https://acct.queue.core.windows.net/q", "core.windows.net:80", HTTPS),
        ("https://acct.queue.core.windows.net/q", " localhost , 10.0.0.0/8 ,core.windows.net ", None),
    ],
)
def test_a_url_goes_through_its_schemes_proxy_unless_no_proxy_names_its_host(url, no_proxy, through):
    assert Proxies(http=HTTP, https=HTTPS, no_proxy=no_proxy).for_url(url) == through


NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True)


@given(
    host=NAMES.filter(lambda name: not name.replace(".", "").isdigit()),  # a name, not an address
    sub=st.from_regex(r"([a-z0-9]{1,8}\.){0,2}", fullmatch=True),
    form=st.sampled_from(["{}", ".{}", "*.{}", "{}:443"]),
    upper=st.booleans(),
    others=st.lists(st.sampled_from(["localhost", "10.0.0.0/8", "::1", "unrelated.example"]), max_size=3),
)
def test_a_host_no_proxy_names_in_any_form_is_reached_directly_with_its_subdomains(host, sub, form, upper, others):
    entry = form.format(host.upper() if upper else host)
    no_proxy = ",".join([*others, entry])
    assert Proxies(https=HTTPS, no_proxy=no_proxy).for_url(f"https://{sub}{host}/q") is None
    if not others:  # a name that only ends like it is another host
        assert Proxies(https=HTTPS, no_proxy=no_proxy).for_url(f"https://x{host}/q") == HTTPS


def test_the_lower_case_form_wins_and_credentials_make_a_basic_proxy_authorization():
    env = {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://ops:p%40ss@lower:3128", "no_proxy": "x.corp"}
    network = Settings.from_env(env).network
    proxy = network.proxies.https
    assert proxy is not None and (proxy.host, proxy.port, network.proxies.no_proxy) == ("lower", 3128, "x.corp")
    assert proxy.authorization == "Basic " + base64.b64encode(b"ops:p@ss").decode()
    assert "p@ss" not in repr(network) and str(proxy) == "proxy lower:3128"
    assert "p@ss" in Settings.from_env(env).secrets  # the redactor takes it out of every text the app shows


@given(st.from_regex(r"[!$&'()*+,;=:%A-Za-z0-9._~-]{6,20}", fullmatch=True).map(lambda text: f"pw{text}Z9"))
def test_a_refused_proxy_url_is_named_without_its_password(password):
    try:
        proxy_of(f"socks5://ops:{password}@gw:1080", "HTTPS_PROXY")
    except SettingsError as exc:
        assert password not in str(exc) and "HTTPS_PROXY must be a proxy reached over plain HTTP" in str(exc)
    else:
        pytest.fail("a socks5 proxy was taken")


def test_the_sender_writes_absolute_form_with_proxy_authorization_to_an_http_proxy():
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def send() -> None:
        listener = await asyncio.start_server(answer, "127.0.0.1", 0)
        proxy = proxy_of(f"http://ops:pw@127.0.0.1:{listener.sockets[0].getsockname()[1]}", "HTTP_PROXY")
        queue = QueueClient.from_queue_url("http://storage.invalid:10001/acct/q?sv=2020-02-10&sig=abc")
        sender = PutMessageSender(
            ConnectionPool("http://storage.invalid:10001/acct/q", 2, None, 5.0, proxy), queue, encoding="none",
            ttl=None, retry=RetryPolicy(attempts=1, base_delay=0.0, max_delay=0.0), pace=SendPace(2),
            on_retry=lambda: None, sas_lifetime=SAS_LIFETIME.default,
        )  # fmt: skip
        try:
            await sender.send("hello")
        finally:
            await queue.close()
            listener.close()

    asyncio.run(send())
    (head,) = seen
    assert head.startswith(b"POST http://storage.invalid:10001/acct/q/messages?sv=2020-02-10&sig=abc HTTP/1.1\r\n")
    assert b"\r\nHost: storage.invalid:10001\r\n" in head
    assert b"\r\nProxy-Authorization: Basic " + base64.b64encode(b"ops:pw") + b"\r\n" in head


def test_a_proxy_that_refuses_the_tunnel_fails_the_connection_naming_its_answer_not_the_credentials():
    gateway = LoopbackProxy({"storage.test": "127.0.0.1"}, credentials=("ops", "right-password")).start()
    try:
        pool = ConnectionPool("https://storage.test:443/acct/q", 1, None, 5.0, proxy_of(
            f"http://ops:wrong-password@127.0.0.1:{gateway.port}", "HTTPS_PROXY"))  # fmt: skip
        with pytest.raises(ConnectionRefusedError) as refused:
            asyncio.run(pool.request(b"POST /acct/q/messages HTTP/1.1\r\n\r\n"))
    finally:
        gateway.stop()
    message = str(refused.value)
    assert message == (
        f"proxy 127.0.0.1:{gateway.port} answered 'HTTP/1.1 407 Proxy Authentication Required' "
        "to CONNECT storage.test:443"
    )
    assert "password" not in message and gateway.tunnels == {}
