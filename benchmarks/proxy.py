"""The ingestion path's CPU per message on an HTTPS Azurite, direct and through a loopback CONNECT proxy
(in a process of its own, so its CPU is not counted), a fresh Azurite per run, medians of repeated runs.

    .venv/bin/python -m benchmarks.proxy [--messages 5000] [--repeat 3] [--window 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from pathlib import Path

from benchmarks.enqueue import Measurement, ingestion_path, medians
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, start_azurite
from fanout.demo_api import demo_ids
from testkit.loopback_proxy import LoopbackProxy
from testkit.private_ca import PrivateCa, private_ca

HOSTS = {service: f"{ACCOUNT}.{service}.proxied.test" for service in ("blob", "queue")}


def _serve_proxy(ports: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    proxy = LoopbackProxy(dict.fromkeys(HOSTS.values(), "127.0.0.1")).start()
    ports.put(proxy.port)
    multiprocessing.Event().wait()


def run(ca: PrivateCa, ids: list[str], window: int, proxy_port: int | None) -> Measurement:
    azurite = start_azurite(tls=(ca.certificate, ca.key))
    try:
        env = {"SSL_CERT_FILE": str(ca.ca_file)}
        if proxy_port is not None:
            ports = {"blob": azurite.blob_port, "queue": azurite.queue_port}
            endpoints = "".join(f"{s.title()}Endpoint=https://{HOSTS[s]}:{ports[s]};" for s in ports)
            env |= {
                "AzureWebJobsStorage": f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                + endpoints,
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            }
        return ingestion_path(azurite, ids, window, env)
    finally:
        azurite.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    ids = demo_ids(args.messages)
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=_serve_proxy, args=(ports,), daemon=True)
    server.start()
    proxy_port = ports.get(timeout=10)
    runs: dict[str, list[Measurement]] = {"direct": [], "proxy": []}
    with tempfile.TemporaryDirectory() as scratch:
        ca = private_ca(Path(scratch), tuple(HOSTS.values()))
        for _ in range(args.repeat):  # round by round, so drift on the machine touches both alike
            runs["direct"].append(run(ca, ids, args.window, None))
            runs["proxy"].append(run(ca, ids, args.window, proxy_port))
    server.terminate()
    print(f"{args.messages:,} messages per run over HTTPS, window {args.window}, medians of {args.repeat} rounds\n")
    print("| ingestion path | msg/s | client CPU µs/msg |\n|---|---|---|")
    for name, label in (("direct", "direct"), ("proxy", "through a CONNECT proxy")):
        rate, cpu = medians(runs[name])
        print(f"| {label} | {rate:,.0f} | {cpu:,.0f} |")


if __name__ == "__main__":
    main()
