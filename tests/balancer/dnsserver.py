"""A small authoritative DNS server on loopback, for discovery tests: records a test changes
while it runs, answers that are slow, dropped or SERVFAIL. UDP and TCP on one port, each on
a thread; built on dnspython's message parsing, no packets written by hand."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import traceback
from collections import Counter
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    """Answers from ``records``: ``set(name, "A", ["127.0.0.2"], ttl=1)``. A name with
    records of another type only gets an empty answer (NOERROR), an unknown name NXDOMAIN.
    ``servfail``, ``drop`` (never answer: the client times out) and ``delay`` (seconds)
    apply per name. SRV answers carry the targets' addresses when ``glue`` is on."""

    def __init__(self) -> None:
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.records: dict[tuple[dns.name.Name, int], tuple[int, list[str]]] = {}
        self.servfail: set[dns.name.Name] = set()
        self.drop: set[dns.name.Name] = set()
        self.delay: dict[dns.name.Name, float] = {}
        self.glue = True
        self.queries: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # what the test changes ----------------------------------------------------------------

    def set(self, name: str, rdtype: str, values: Iterable[str], ttl: int = 1) -> None:
        with self._lock:
            self.records[(_name(name), dns.rdatatype.from_text(rdtype))] = (ttl, list(values))

    def remove(self, name: str, rdtype: str | None = None) -> None:
        wanted = _name(name)
        with self._lock:
            for key in list(self.records):
                if key[0] == wanted and (
                    rdtype is None or key[1] == dns.rdatatype.from_text(rdtype)
                ):
                    del self.records[key]

    def fail(self, name: str, how: str | None) -> None:
        """``"servfail"``, ``"drop"``, or None for answering normally again."""
        wanted = _name(name)
        with self._lock:
            self.servfail.discard(wanted)
            self.drop.discard(wanted)
            if how == "servfail":
                self.servfail.add(wanted)
            elif how == "drop":
                self.drop.add(wanted)

    def slow(self, name: str, seconds: float) -> None:
        with self._lock:
            self.delay[_name(name)] = seconds

    def asked(self, name: str, rdtype: str) -> int:
        return self.queries[(str(_name(name)), rdtype)]

    def close(self) -> None:
        self._closed = True
        self.udp.close()
        self.tcp.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # answering -----------------------------------------------------------------------------

    def answer(self, wire: bytes, limit: int | None) -> tuple[bytes | None, float]:
        """The reply to ``wire`` (None: say nothing) and how long to wait before sending it.
        ``limit``: the most a UDP reply may carry; past it, a truncated reply."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None, 0.0
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire(max_size=65535), 0.0
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        self.queries[(str(name), dns.rdatatype.to_text(rdtype))] += 1
        with self._lock:
            if name in self.drop:
                return None, 0.0
            delay = self.delay.get(name, 0.0)
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire(max_size=65535), delay
            found = self.records.get((name, rdtype))
            exists = any(key[0] == name for key in self.records)
            if found is not None:
                ttl, values = found
                response.answer.append(
                    dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, rdtype, values)
                )
                if rdtype == dns.rdatatype.SRV and self.glue:
                    self._add_glue(response, values)
            elif not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
        wire_out = response.to_wire(max_size=65535)
        if limit is not None:
            payload = query.payload if query.edns >= 0 else 512
            if len(wire_out) > min(limit, payload):
                response.answer.clear()
                response.additional.clear()
                response.flags |= dns.flags.TC
                wire_out = response.to_wire(max_size=65535)
        return wire_out, delay

    def _add_glue(self, response: dns.message.Message, values: list[str]) -> None:
        for value in values:
            target = _name(value.split()[-1])
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                found = self.records.get((target, rdtype))
                if found is not None:
                    response.additional.append(
                        dns.rrset.from_text_list(
                            target, found[0], dns.rdataclass.IN, rdtype, found[1]
                        )
                    )

    def _serve_udp(self) -> None:
        while not self._closed:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            try:
                reply, delay = self.answer(wire, limit=65000)
            except Exception:  # a bug here must show as a failed test, not a silent server
                traceback.print_exc()
                continue
            if reply is None:
                continue
            if delay:
                threading.Timer(delay, self._send, (reply, peer)).start()
            else:
                self._send(reply, peer)

    def _send(self, reply: bytes, peer: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_client, args=(conn,), daemon=True).start()

    def _tcp_client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    head = _recv(conn, 2)
                    if head is None:
                        return
                    wire = _recv(conn, struct.unpack("!H", head)[0])
                    if wire is None:
                        return
                    reply, delay = self.answer(wire, limit=None)
                    if reply is None:
                        continue
                    if delay:
                        threading.Event().wait(delay)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on one free port (a port free for one may be taken for the
    other, so a few are tried)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no port free for both UDP and TCP")


def _recv(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)
